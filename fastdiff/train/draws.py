"""Where the training losses get their randomness: a torch.Generator, or per-sample counter streams.

`GeneratorDraws` is the plain choice (`torch.randn` from one generator). `CounterDraws` gives sample b
the Gaussians of Philox keyed by its own 64-bit seed (the counter stream of `fastdiff.noise`, on a stream
of its own), so a sample's noise never depends on the batch around it: a batch split across ranks draws
exactly what the undivided batch draws, which is what makes 2 ranks x batch b equal 1 rank x batch 2b.
Each draw is addressed by a `slot` (an index that the loss assigns to one role, e.g. "chain 1, step 3").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fastdiff.dtypes import working_dtype
from fastdiff.noise import STREAM_TRAIN, seed_keys
from fastdiff.ops.philox import philox_normal


class Draws:
    """Standard normals `[B, *shape]` for slot `slot` of a batch of B samples."""

    def normal(self, batch: int, shape: tuple[int, ...], slot: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        raise NotImplementedError


class GeneratorDraws(Draws):
    """`torch.randn` from `generator` (torch's global generator when None), in call order."""

    def __init__(self, generator: torch.Generator | None):
        if generator is not None and not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
        self.generator = generator

    def normal(self, batch, shape, slot, dtype, device):
        gen_device = self.generator.device if self.generator is not None else torch.device("cpu")
        z = torch.randn((batch, *shape), generator=self.generator, dtype=dtype, device=gen_device)
        return z.to(device)


class CounterDraws(Draws):
    """Philox normals keyed by per-sample seeds: element e of slot `slot` of sample b is a fixed function of
    (seeds[b], e, slot, STREAM_TRAIN). A trainer gives every (step, sample) its own seed."""

    def __init__(self, seeds: Sequence[int] | torch.Tensor):
        if isinstance(seeds, int) or seeds is None:
            raise TypeError(f"seed must be a list of per-sample ints or an int64 [B] tensor, got {type(seeds).__name__}")
        device = seeds.device if isinstance(seeds, torch.Tensor) else torch.device("cpu")
        self.keys = seed_keys(seeds, len(seeds), device)

    def normal(self, batch, shape, slot, dtype, device):
        if batch != self.keys.shape[0]:
            raise ValueError(f"seed must hold one seed per sample: got {self.keys.shape[0]} seeds for batch size {batch}")
        z = philox_normal(self.keys.to(device), math.prod(shape), 0, slot, STREAM_TRAIN, dtype=working_dtype(dtype))
        return z.view(batch, *shape).to(dtype)


def make_draws(generator: torch.Generator | None, seed: Sequence[int] | torch.Tensor | None) -> Draws:
    """CounterDraws when per-sample `seed`s are given, else GeneratorDraws; giving both is an error."""
    if seed is not None:
        if generator is not None:
            raise ValueError("give at most one of generator and seed (per-sample seeds), got both")
        return CounterDraws(seed)
    return GeneratorDraws(generator)
