"""Poisoned outputs: inside `poisoned_outputs()` every uninitialized allocation (torch.empty in Python, at::empty in
the compiled extension, the Triton wrappers' outputs) is filled with NaN, so an output element a kernel fails to
write shows up as NaN instead of passing with whatever the allocator left there."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def poisoned_outputs() -> Iterator[None]:
    """torch's deterministic mode fills uninitialized memory with NaN (integers with their largest value)."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    was_warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    was_filling = torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic, warn_only=was_warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = was_filling


def stable_seed(*parts: object) -> int:
    """A seed from the parts' text that is the same in every process (`hash` of a str is salted per process)."""
    return zlib.crc32(repr(parts).encode())
