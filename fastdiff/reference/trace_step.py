"""Reference for the fused trace step: a solver update plus a Hutchinson trace estimate, per sample.

    x_out      = a x + sum_i b_i k_i                                      (x's dtype)
    total_out  = total + c + w * (1/P) sum_p <u_p, v_p>                   (float64, [B])

u_p = v_p^T (dD/dx) is the vector-Jacobian product of the network with probe p, so <u_p, v_p> is
one Hutchinson estimate of div_x D. The probe v_p of sample b is a fixed function of (keys[b],
element e, step, stage, p), drawn from the counter stream of `fastdiff.reference.philox` with

    counter = (e // 4, step, stage + 2^16 p, STREAM_PROBE)

- "rademacher": element 4g + q is 1 - 2 (r_q >> 31), the top bit of Philox word q of group g (exact, +-1);
- "gaussian":   element e is the standard normal of that counter (Box-Muller, as `philox_normal`).

A probe therefore never depends on the batch around the sample. Here the dots run in float32 (float64
for float64 tensors) and are added to the float64 accumulator.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastdiff.dtypes import working_dtype
from fastdiff.noise import PROBE_STRIDE, STREAM_PROBE
from fastdiff.reference.philox import MASK32, philox4x32, philox_normal

__all__ = ["PROBES", "PROBE_STRIDE", "probes", "rademacher", "trace_step"]

PROBES = ("rademacher", "gaussian")


def rademacher(keys: torch.Tensor, numel: int, step: int, stage_word: int, dtype: torch.dtype) -> torch.Tensor:
    """+-1 `[B, numel]`: element 4g + q is 1 - 2 (r_q >> 31) of the Philox words of (g, step, stage_word, STREAM_PROBE)."""
    groups = (numel + 3) // 4
    g = torch.arange(groups, dtype=torch.int64, device=keys.device)
    key = ((keys & MASK32).unsqueeze(1), ((keys >> 32) & MASK32).unsqueeze(1))
    counter = (
        g.unsqueeze(0).expand(keys.shape[0], groups),
        torch.full_like(g, step & MASK32).unsqueeze(0),
        torch.full_like(g, stage_word & MASK32).unsqueeze(0),
        torch.full_like(g, STREAM_PROBE).unsqueeze(0),
    )
    words = torch.stack(philox4x32(counter, key), dim=-1)  # [B, groups, 4]
    signs = 1 - 2 * (words >> 31)
    return signs.reshape(keys.shape[0], groups * 4)[:, :numel].to(dtype)


def probes(keys: torch.Tensor, numel: int, n_probes: int, step: int, stage: int, kind: str, dtype: torch.dtype) -> torch.Tensor:
    """The probes `[P, B, numel]` of (step, stage): probe p of sample b as in the module docstring."""
    if kind not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {kind!r}")
    out = []
    for p in range(n_probes):
        word = (stage + PROBE_STRIDE * p) & MASK32
        if kind == "rademacher":
            out.append(rademacher(keys, numel, step, word, dtype))
        else:
            out.append(philox_normal(keys, numel, step, word, STREAM_PROBE, dtype))
    return torch.stack(out)


def trace_step(
    x: torch.Tensor,
    ks: Sequence[torch.Tensor],
    a: float,
    bs: Sequence[float],
    u: torch.Tensor,
    keys: torch.Tensor,
    step: int,
    stage: int,
    kind: str,
    total: torch.Tensor,
    c: float,
    w: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a x + sum_i b_i k_i, total + c + w mean_p <u_p, v_p>); u is `[P, *x.shape]`, total float64 `[B]`."""
    x_out = x * a
    for b, k in zip(bs, ks, strict=True):
        if b != 0.0:
            x_out = x_out + b * k
    compute = working_dtype(x.dtype)
    n_probes, batch = u.shape[0], x.shape[0]
    v = probes(keys, x[0].numel(), n_probes, step, stage, kind, compute)
    dots = (u.to(compute).reshape(n_probes, batch, -1) * v).sum(-1)
    total_out = total + c + w * dots.to(torch.float64).mean(0)
    return x_out, total_out
