"""The noise of a stochastic scheduler run: fastdiff's counter stream (`fastdiff.noise`), keyed per sample.

Where the per-sample keys come from, first match wins:
- a list of torch.Generators, one per sample: one int64 drawn from each, so sample k depends on generator k alone;
- one torch.Generator: one int64 per sample drawn from it;
- the scheduler's `seed` config (int): fastdiff's per-sample seeds of that int (`fastdiff.noise.sample_seeds`);
- otherwise torch's global generator.
Keys drawn from generators stay on the device (the draws happen on the generator's device), so no host sync.
"""

from __future__ import annotations

import torch

from fastdiff.noise import STREAM_SOLVER, CounterNoise, sample_seeds

_KEY_BOUND = 2**62


class KeyedNoise(CounterNoise):
    """`CounterNoise` whose per-sample keys are an int64 tensor already on the sample's device."""

    def __init__(self, keys: torch.Tensor, backend: str = "auto"):
        self.seeds = None
        self.keys = keys
        self.backend = backend
        self.stream = STREAM_SOLVER


def _draw(generator: torch.Generator, n: int, device: torch.device) -> torch.Tensor:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or a list of them, got {type(generator).__name__}")
    return torch.randint(0, _KEY_BOUND, (n,), generator=generator, device=generator.device, dtype=torch.int64).to(device)


def run_noise(
    batch: int,
    device: torch.device,
    generator: torch.Generator | list[torch.Generator] | None,
    seed: int | None,
    backend: str,
) -> CounterNoise:
    """The counter stream for a run on `batch` samples on `device`."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != batch:
            raise ValueError(f"generator list must have one generator per sample: got {len(generator)} for batch size {batch}")
        return KeyedNoise(torch.cat([_draw(g, 1, device) for g in generator]), backend)
    if generator is not None:
        return KeyedNoise(_draw(generator, batch, device), backend)
    return CounterNoise(sample_seeds(seed, batch), device, backend)
