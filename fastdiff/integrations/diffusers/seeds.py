"""The noise of a stochastic scheduler run: fastdiff's counter stream (`fastdiff.noise`), keyed per sample.

Where the per-sample keys come from, first match wins:
- a list of torch.Generators, one per sample: one int64 drawn from each, so sample k depends on generator k alone;
- one torch.Generator: one int64 per sample drawn from it;
- the scheduler's `seed` config (int): fastdiff's per-sample seeds of that int (`CounterNoise.from_seed`);
- otherwise torch's global generator.
Keys are drawn on the generator's device and never read on the host; a CPU generator's keys are copied to the
sample's device once, at the first step of a run.
"""

from __future__ import annotations

import torch

from fastdiff.ops.philox import CounterNoise

_KEY_BOUND = 2**62


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
        return CounterNoise.from_keys(torch.cat([_draw(g, 1, device) for g in generator]), backend)
    if generator is not None:
        return CounterNoise.from_keys(_draw(generator, batch, device), backend)
    return CounterNoise.from_seed(seed, batch, device, backend)
