"""Reference for the generic solver step `x' = a x + sum_i b_i k_i + sum_j c_j z_j`."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def solver_step(
    x: torch.Tensor,
    ks: Sequence[torch.Tensor],
    a: float,
    bs: Sequence[float],
    noises: Sequence[tuple[float, torch.Tensor]] = (),
) -> torch.Tensor:
    """`a x + sum_i b_i k_i + sum_j c_j z_j` in the dtype of `x`; terms with a zero coefficient are skipped."""
    out = x * a
    for b, k in zip(bs, ks, strict=True):
        if b != 0.0:
            out = out + b * k
    for c, z in noises:
        if c != 0.0:
            out = out + c * z
    return out
