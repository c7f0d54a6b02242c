"""Where stochastic solvers get their Gaussians: seeds, streams and the noise-source protocol (a leaf: no fastdiff
import; the counter stream itself, `fastdiff.ops.philox.CounterNoise`, draws through the philox op).

`CounterNoise` is the default: the Gaussian for (sample seed, element, step, stage, stream) is a
fixed function, Philox4x32-10 keyed by the sample's 64-bit seed with counter
(element // 4, step, stage, stream), followed by Box-Muller (docs/ALGORITHMS.md section 4). The same
seed therefore gives the same noise on every backend, and a sample's noise never depends on the
batch around it. `SamplerNoise` wraps a user's k-diffusion style `noise_sampler(sigma, sigma_next)`,
which then wins over the counter stream.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

# The counter layout shared with the kernels (C++/CUDA copies in csrc/limits.h, held equal by tests/test_constants.py).
STREAM_SOLVER = 0
STREAM_PROBE = 1
STREAM_INITIAL = 2  # initial noise x_T of fastdiff.train.sample_distributed
STREAM_TRAIN = 3  # training-loss noise (fastdiff.train.draws)
STREAM_BROWNIAN = 4  # the Brownian tree's node Gaussians: counter (e // 4, node, 0, stream) (fastdiff.brownian_tree)
STREAM_BRIDGE = 5  # the Brownian tree's bridge values inside a leaf: counter (e // 4, leaf, position, stream)
# The counter's element word is 32 bits wide and counts groups of four elements: elements per sample at most.
MAX_NUMEL = 4 << 32
# Hutchinson probes: the third counter word is stage + PROBE_STRIDE * probe, so stage and probe are below PROBE_STRIDE.
PROBE_STRIDE = 1 << 16

_MASK64 = (1 << 64) - 1
_GOLDEN_GAMMA = 0x9E3779B97F4A7C15


def splitmix64(state: int) -> int:
    """One SplitMix64 output for a 64-bit state (Steele et al. 2014)."""
    z = state & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def sample_seeds(seed: int | Sequence[int] | torch.Tensor | None, batch: int) -> list[int]:
    """Per-sample 64-bit seeds.

    - a list (or 1-D integer tensor) of `batch` ints: used as given, one per sample;
    - an int `s`: sample b gets the b-th SplitMix64 output of `s`, so sample b is the same
      whatever the batch size;
    - None: `s` is drawn from torch's global generator (so `torch.manual_seed` reproduces it).
    """
    if seed is None:
        seed = int(torch.randint(0, 2**62, (), dtype=torch.int64))
    if isinstance(seed, torch.Tensor):
        if seed.ndim == 0:
            seed = int(seed)
        else:
            if seed.dtype.is_floating_point or seed.is_complex() or seed.ndim != 1:
                raise TypeError(f"seed tensor must be a 1-D integer tensor, got dtype {seed.dtype}, shape {tuple(seed.shape)}")
            seed = seed.tolist()
    if isinstance(seed, bool):
        raise TypeError("seed must be an int, a list of ints or None, got a bool")
    if isinstance(seed, int):
        _check_64_bits(seed, "seed")
        return [splitmix64(seed + (b + 1) * _GOLDEN_GAMMA) for b in range(batch)]
    if isinstance(seed, (list, tuple)):
        if len(seed) != batch:
            raise ValueError(f"seed list must have one seed per sample: got {len(seed)} seeds for batch size {batch}")
        for s in seed:
            if isinstance(s, bool) or not isinstance(s, int):
                raise TypeError(f"seed list entries must be ints, got {type(s).__name__}")
            _check_64_bits(s, "seed list entries")
        return [s & _MASK64 for s in seed]
    raise TypeError(f"seed must be an int, a list of ints or None, got {type(seed).__name__}")


def _check_64_bits(seed: int, name: str) -> None:
    """Seeds are 64-bit: signed or unsigned, so [-2^63, 2^64); a wider int would silently alias a smaller one."""
    if not -(1 << 63) <= seed < (1 << 64):
        raise ValueError(f"{name} must fit in 64 bits, in [-2**63, 2**64), got {seed}")


def device_keys(seed: object, batch: int, device: torch.device) -> torch.Tensor | None:
    """`seed` itself when it is already the keys: an int64 `[batch]` tensor on `device`; else None."""
    if isinstance(seed, torch.Tensor) and seed.dtype == torch.int64 and seed.device == device and seed.shape == (batch,):
        return seed
    return None


def seed_keys(seed: object, batch: int, device: torch.device) -> torch.Tensor:
    """The per-sample keys (int64 `[batch]` on `device`) of a `seed` argument: a device key tensor as given, else
    the keys of `sample_seeds(seed, batch)`. The one place a `seed` argument becomes a noise key."""
    keys = device_keys(seed, batch, device)
    return keys if keys is not None else seeds_to_keys(sample_seeds(seed, batch), device)


def seeds_to_keys(seeds: Sequence[int], device: torch.device) -> torch.Tensor:
    """64-bit unsigned seeds as an int64 tensor (two's complement) on `device`."""
    signed = [s - (1 << 64) if s >= (1 << 63) else s for s in seeds]
    return torch.tensor(signed, dtype=torch.int64, device=device)


class NoiseSource:
    """Standard normal noise shaped like the sampler state. `replayable`: drawing the same
    (step, stage) twice gives the same Gaussians at no extra cost, so a fused step may
    regenerate noise instead of reading a tensor that contains it."""

    replayable = False

    def draw(self, like: torch.Tensor, step: int, stage: int, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def terms(self, request: object) -> list[tuple[float, object]] | None:
        """The noise of a `fastdiff.ops.solver_step.NoiseDraw` as a weighted sum of other draws, [(weight, draw)], which
        the fused step generates in place (the Brownian tree's node Gaussians); None: the request is drawn as it is."""
        return None


def _as_tensor(sigma: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return sigma if isinstance(sigma, torch.Tensor) else torch.tensor(sigma, dtype=like.dtype, device=like.device)


class SamplerNoise(NoiseSource):
    """A user's `noise_sampler(sigma, sigma_next) -> Tensor` (k-diffusion semantics)."""

    def __init__(self, noise_sampler: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        if not callable(noise_sampler):
            got = type(noise_sampler).__name__
            raise TypeError(f"noise_sampler must be callable as noise_sampler(sigma, sigma_next), got {got}")
        self.noise_sampler = noise_sampler

    def draw(self, like, step, stage, sigma, sigma_next):
        z = self.noise_sampler(_as_tensor(sigma, like), _as_tensor(sigma_next, like))
        if not isinstance(z, torch.Tensor) or z.shape != like.shape:
            got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"noise_sampler must return a tensor of shape {tuple(like.shape)}, got {got}")
        return z.to(like.dtype)
