"""The noise of a stochastic scheduler run: fastdiff's counter stream (`fastdiff.noise`), or one Brownian path per
sample with the config's `noise="brownian"` (`fastdiff.ops.brownian`), keyed per sample.

Where the per-sample keys come from, first match wins:
- a list of torch.Generators, one per sample: one int64 drawn from each, so sample k depends on generator k alone;
- one torch.Generator: one int64 per sample drawn from it;
- the scheduler's `seed` config (int): fastdiff's per-sample seeds of that int (`CounterNoise.from_seed`);
- on a flow config, a hash of each sample's own starting latent (`sample_keys`): flow pipelines (Flux, SD3, Wan,
  LTX, CogView4, ...) never pass `generator` to `step()`, while their latents come from the user's generators, so
  image k's noise follows from its own seed alone, batched or not (the VP pipelines StableDiffusion*, DDPM, DDIM,
  ... pass theirs through `step(..., generator=)`);
- otherwise torch's global generator.
Keys are drawn on the generator's device and never read on the host; a CPU generator's keys are copied to the
sample's device once, at the first step of a run.
"""

from __future__ import annotations

import torch

from fastdiff.noise import NoiseSource, seed_keys
from fastdiff.ops.brownian import BrownianNoise
from fastdiff.ops.philox import CounterNoise

_KEY_BOUND = 2**62
_HASH_PRIME = 2**31 - 1  # two hashes mod this Mersenne prime make a 62-bit key; every product stays below 2**63
_HASH_MULTIPLIERS = (48271, 69621)  # primitive roots mod the prime: position weights w_j = m^(j+1) mod p


def _position_weights(numel: int, multiplier: int, device: torch.device) -> torch.Tensor:
    """w_j = multiplier^(j+1) mod p for j < numel (int64), by repeated squaring on the device."""
    exponent = torch.arange(1, numel + 1, device=device, dtype=torch.int64)
    weight, base = torch.ones_like(exponent), torch.full_like(exponent, multiplier)
    for _ in range(numel.bit_length()):
        weight = torch.where(exponent % 2 == 1, weight * base % _HASH_PRIME, weight)
        base, exponent = base * base % _HASH_PRIME, exponent // 2
    return weight


def _draw(generator: torch.Generator, n: int, device: torch.device) -> torch.Tensor:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}")
    return torch.randint(0, _KEY_BOUND, (n,), generator=generator, device=generator.device, dtype=torch.int64).to(device)


def sample_keys(sample: torch.Tensor) -> torch.Tensor:
    """A key per sample from the bits of its own values: h_m = sum_j bits_j w_j mod p for two multipliers m, the key
    h_1 * 2^31 + h_2 (int64 [B], on the sample's device, no host sync)."""
    bits = sample.detach().to(torch.float32).reshape(sample.shape[0], -1).contiguous().view(torch.int32).to(torch.int64)
    bits = bits & 0xFFFFFFFF  # the 32 bits as a non-negative number below 2^32; bits * w < 2^63
    hashes = [(bits * _position_weights(bits.shape[1], m, bits.device) % _HASH_PRIME).sum(1) % _HASH_PRIME
              for m in _HASH_MULTIPLIERS]
    return hashes[0] * 2**31 + hashes[1]


def run_noise(
    batch: int,
    device: torch.device,
    generator: torch.Generator | list[torch.Generator] | None,
    seed: int | None,
    backend: str,
    start: torch.Tensor | None = None,
    kind: str = "counter",
) -> NoiseSource:
    """The noise of a run on `batch` samples on `device`: the counter stream, or with `kind="brownian"` one Brownian
    path per sample, of the keys below; `start`: the starting samples of a flow run."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch:
            raise ValueError(f"generator list must have one generator per sample: got {len(generator)} for batch size {batch}")
        keys = torch.cat([_draw(g, 1, device) for g in generator])
    elif generator is not None:
        keys = _draw(generator, batch, device)
    elif seed is None and start is not None:
        keys = sample_keys(start)
    else:
        keys = seed_keys(seed, batch, device)
    return BrownianNoise(keys, backend) if kind == "brownian" else CounterNoise.from_keys(keys, backend)
