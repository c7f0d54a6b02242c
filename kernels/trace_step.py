"""The fused trace step in Triton: out = a x + sum_i b_i k_i and, per sample,
total_out = total + c + w (1/P) sum_p <u_p, v_p>.

v_p is the probe of `fastdiff.reference.trace_step`, generated in registers: counter
(e // 4, step, stage + 2^16 p, STREAM_PROBE) under the sample's seed, Rademacher from the top bit of
each Philox word or Gaussian by Box-Muller (`fastdiff.kernels.philox`). One program per sample walks
its elements in tiles of BLOCK groups of four (the tile and probe counts are compile-time constants:
one compilation per sample size and probe count, which a likelihood run keeps fixed); the dot
accumulates elementwise in a tile and is summed once at the end, so the order is fixed by the
sample's size alone (deterministic, batch independent). Arithmetic in float32 (float64 for float64 tensors); total is float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from fastdiff.kernels.limits import MAX_TERMS
from fastdiff.kernels.philox import BLOCK, box_muller4, compute_dtype, interleave4, philox_block, round_to
from fastdiff.kernels.solver_step import as_float, float_bits, nonzero_terms

from fastdiff.noise import PROBE_STRIDE, STREAM_PROBE

STREAM_PROBE_WORD = tl.constexpr(STREAM_PROBE)
PROBE_SHIFT = tl.constexpr(PROBE_STRIDE.bit_length() - 1)  # p << PROBE_SHIFT = PROBE_STRIDE p


@triton.jit
def probe_tile(key, g, step, stage_word, GAUSSIAN: tl.constexpr, DTYPE: tl.constexpr):
    """[N, 4] probe values of groups g: row i holds elements 4 g[i] .. 4 g[i] + 3."""
    r0, r1, r2, r3 = philox_block(key, g, step, stage_word, tl.full((), STREAM_PROBE_WORD, tl.uint32))
    if GAUSSIAN:
        z0, z1, z2, z3 = box_muller4(r0, r1, r2, r3, DTYPE)
    else:
        z0 = 1.0 - 2.0 * (r0 >> 31).to(DTYPE)
        z1 = 1.0 - 2.0 * (r1 >> 31).to(DTYPE)
        z2 = 1.0 - 2.0 * (r2 >> 31).to(DTYPE)
        z3 = 1.0 - 2.0 * (r3 >> 31).to(DTYPE)
    return interleave4(z0.to(DTYPE), z1.to(DTYPE), z2.to(DTYPE), z3.to(DTYPE))


@triton.jit(do_not_specialize=["a_bits", "b_bits", "c_bits", "w_bits", "step", "stage"])
def _trace_step_kernel(
    x_ptr,
    k_ptrs,
    u_ptr,
    keys_ptr,
    total_ptr,
    out_ptr,
    total_out_ptr,
    per_sample,
    plane,
    step,
    stage,
    a_bits,
    b_bits,
    c_bits,
    w_bits,
    N_TILES: tl.constexpr,
    N_PROBES: tl.constexpr,
    NUM_K: tl.constexpr,
    GAUSSIAN: tl.constexpr,
    BLOCK: tl.constexpr,
    DTYPE: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    key = tl.load(keys_ptr + b)
    a = as_float(a_bits, DTYPE)
    dot = tl.zeros((BLOCK, 4), dtype=DTYPE)
    for tile in range(N_TILES):
        g = tile * BLOCK + tl.arange(0, BLOCK).to(tl.int64)
        offs = g[:, None] * 4 + tl.arange(0, 4)[None, :]
        mask = offs < per_sample
        offs = b * per_sample + offs
        acc = a * tl.load(x_ptr + offs, mask=mask).to(DTYPE)
        for i in tl.static_range(NUM_K):
            acc += as_float(b_bits[i], DTYPE) * tl.load(k_ptrs[i] + offs, mask=mask).to(DTYPE)
        tl.store(out_ptr + offs, round_to(acc, out_ptr.dtype.element_ty), mask=mask)
        for p in range(N_PROBES):
            stage_word = stage.to(tl.uint32) + (tl.full((), p, tl.uint32) << PROBE_SHIFT)
            v = probe_tile(key, g, step, stage_word, GAUSSIAN, DTYPE)
            up = tl.load(u_ptr + tl.full((), p, tl.int64) * plane + offs, mask=mask, other=0.0).to(DTYPE)
            dot += up * v
    mean = tl.sum(tl.sum(dot, axis=1), axis=0).to(tl.float64) / N_PROBES
    c = as_float(c_bits, tl.float64)
    w = as_float(w_bits, tl.float64)
    tl.store(total_out_ptr + b, tl.load(total_ptr + b) + c + w * mean)


def trace_step(
    x: torch.Tensor,
    ks: Sequence[torch.Tensor],
    a: float,
    bs: Sequence[float],
    u: torch.Tensor,
    keys: torch.Tensor,
    step: int,
    stage: int,
    probe: int,
    total: torch.Tensor,
    c: float,
    w: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a x + sum_i bs[i] ks[i], total + c + w mean_p <u[p], v_p>) as new row-major tensors; probe 0 is Rademacher,
    1 Gaussian; u is [P, *x.shape], keys int64 [B], total float64 [B] (`fastdiff.ops.trace_step` checks them)."""
    x, (ks, bs), u, keys, total = x.contiguous(), nonzero_terms(ks, bs), u.contiguous(), keys.contiguous(), total.contiguous()
    assert len(ks) <= MAX_TERMS
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    total_out = torch.empty_like(total)
    batch = x.shape[0]
    if batch == 0:
        return out, total_out
    per_sample = x.numel() // batch
    n_tiles = triton.cdiv(triton.cdiv(per_sample, 4), BLOCK)
    _trace_step_kernel[(batch,)](
        x,
        tuple(ks),
        u,
        keys,
        total,
        out,
        total_out,
        per_sample,
        x.numel(),
        step,
        stage,
        float_bits(a),
        tuple(float_bits(b) for b in bs),
        float_bits(c),
        float_bits(w),
        N_TILES=n_tiles,
        N_PROBES=u.shape[0],
        NUM_K=len(ks),
        GAUSSIAN=probe == 1,
        BLOCK=BLOCK,
        DTYPE=compute_dtype(x.dtype),
    )
    return out, total_out
