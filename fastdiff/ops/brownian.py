"""`BrownianNoise`: the noise source whose draws are increments of one Brownian path per sample, generated in the
fused kernels from the counter stream (docs/ALGORITHMS.md section 15).

A draw over (sigma, sigma') is z = (W(u(sigma')) - W(u(sigma))) / sd on the tree time u = r / (1 + r),
r = sqrt(sigma) (`fastdiff.brownian_tree`): a weighted sum of tree-node and leaf-bridge Gaussians, each a counter
draw (keys[b], e, step word, stage word, stream), so `fastdiff.ops.solver_step` generates it in registers like any
counter draw (`terms`), on every backend, with no state. The noise depends on the interval only, not on the step
index: refining the grid keeps the path (the sd-weighted fine draws sum to the coarse one), and a sample's noise
never depends on its batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastdiff.brownian_tree import DEFAULT_DEPTH, MAX_DEPTH, increment_weights
from fastdiff.noise import STREAM_BRIDGE, STREAM_BROWNIAN, NoiseSource, seed_keys
from fastdiff.ops.philox import CounterNoise
from fastdiff.ops.solver_step import NoiseDraw, solver_step
from fastdiff.validation import check_positive_int

__all__ = ["BrownianNoise"]


class BrownianNoise(NoiseSource):
    """One Brownian path per sample (per-sample `keys`), truncated at `depth` tree levels (leaves 2^-depth in u)."""

    replayable = True

    def __init__(self, keys: torch.Tensor, backend: str = "auto", depth: int = DEFAULT_DEPTH):
        depth = check_positive_int(depth, "depth")
        if depth > MAX_DEPTH:
            raise ValueError(f"depth must be at most {MAX_DEPTH} (node indices fill the 32-bit step word), got {depth}")
        self.streams = {stream: CounterNoise.from_keys(keys, backend, stream) for stream in (STREAM_BROWNIAN, STREAM_BRIDGE)}
        self.keys, self.backend, self.depth = keys, backend, depth

    @classmethod
    def from_seed(
        cls, seed: object, batch: int, device: torch.device, backend: str = "auto", depth: int = DEFAULT_DEPTH
    ) -> BrownianNoise:
        """The paths of a `seed` argument (`fastdiff.noise.seed_keys`): int, list of ints, device keys or None."""
        return cls(seed_keys(seed, batch, device), backend, depth)

    def terms(self, request: NoiseDraw) -> list[tuple[float, NoiseDraw]]:
        sigma, sigma_next = request.host_interval()
        return [
            (w, NoiseDraw(self.streams[stream], step, stage, request.sigma, request.sigma_next, (sigma, sigma_next)))
            for (stream, step, stage), w in increment_weights(sigma, sigma_next, self.depth)
        ]

    def draw(self, like, step, stage, sigma, sigma_next):
        if like.shape[0] != self.keys.shape[0]:
            raise ValueError(f"noise for {like.shape[0]} samples requested from {self.keys.shape[0]} Brownian paths")
        request = NoiseDraw(self, step, stage, sigma, sigma_next)
        return solver_step(torch.zeros_like(like), [], 0.0, [], noise=[(1.0, request)], backend=self.backend)


class BrownianTreeNoiseSampler:
    """k-diffusion's `BrownianTreeNoiseSampler(x, sigma_min, sigma_max, seed=None, transform=None)` on the counter tree:
    called as `noise_sampler(sigma, sigma_next)` it returns the normalized increment of each sample's path over that
    interval, shaped like `x`. Per-sample paths (`seed`: an int gives every sample its own path, a sample's noise is the
    same in any batch; or one int per sample), generated on x's device at kernel speed, identical on every device
    (`cpu`, ComfyUI's switch for a CPU tree, changes nothing here). The tree spans every sigma in [0, inf] on the time
    u = r / (1 + r), r = sqrt(sigma); calls outside [sigma_min, sigma_max] raise, as k-diffusion's tree does, and `transform`
    (k-diffusion's time map) must be None. Reading sigma from a device tensor syncs once per call; `fastdiff.sample`
    given this object instead generates the same draws inside its fused steps, with no sync."""

    def __init__(
        self,
        x: torch.Tensor,
        sigma_min: float,
        sigma_max: float,
        seed: object = None,
        transform: object = None,
        cpu: bool = False,
        depth: int = DEFAULT_DEPTH,
        backend: str = "auto",
    ):
        if transform is not None:
            raise ValueError("transform must be None: the tree's time is fixed, u = r / (1 + r) with r = sqrt(sigma)")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        if not 0.0 <= self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 <= sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.shape = tuple(x.shape)
        self.source = BrownianNoise.from_seed(seed, x.shape[0], x.device, backend, depth)
        self.like = torch.empty_like(x, memory_format=torch.contiguous_format)

    def __call__(self, sigma: torch.Tensor | float, sigma_next: torch.Tensor | float) -> torch.Tensor:
        ends = (float(sigma), float(sigma_next))
        self.check_range(ends)
        return self.source.draw(self.like, 0, 0, *ends)

    def check_range(self, sigmas: Sequence[float]) -> None:
        """Raise for noise levels outside [sigma_min, sigma_max] (0, the end of a grid, draws no noise)."""
        for sigma in sigmas:
            if sigma != 0.0 and not self.sigma_min <= sigma <= self.sigma_max:
                raise ValueError(f"noise requested at sigma={sigma}, outside the tree's [{self.sigma_min}, {self.sigma_max}]")
