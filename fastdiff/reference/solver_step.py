"""Reference for the generic solver step `x' = a x + sum_i b_i k_i + sum_d c_d z_d`.

z_d are the counter-based standard normals of `fastdiff.reference.philox` for the draw's
(step, stage, stream): element e of sample x[b] (row-major within the sample) is the normal of
(keys[b], e, step, stage, stream). Plain PyTorch arithmetic in x's dtype.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastdiff.reference.philox import philox_normal


def solver_step(
    x: torch.Tensor,
    ks: Sequence[torch.Tensor],
    a: float,
    bs: Sequence[float],
    keys: torch.Tensor | None = None,
    draws: Sequence[tuple[int, int, int]] = (),
    cs: Sequence[float] = (),
) -> torch.Tensor:
    """`a x + sum_i b_i k_i + sum_d c_d z_d` in the dtype of `x`; terms with a zero coefficient are skipped."""
    out = x * a
    for b, k in zip(bs, ks, strict=True):
        if b != 0.0:
            out = out + b * k
    for c, (step, stage, stream) in zip(cs, draws, strict=True):
        if c != 0.0:
            per_sample = x[0].numel()
            out = out + c * philox_normal(keys, per_sample, step, stage, stream, x.dtype).view(x.shape)
    return out
