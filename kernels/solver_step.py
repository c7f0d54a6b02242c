"""The fused solver step in Triton: out = a x + sum_i b_i k_i + sum_d c_d z_d.

x and the k_i are dense tensors of one shape [B, ...]; z_d is the counter-based normal of draw
d = (step, stage, stream) at element e of sample b (row-major within x[b]): element [b, e] of
`fastdiff.reference.philox.philox_normal(keys, x[0].numel(), step, stage, stream)`, in float64 for
float64 tensors. The normals are generated in registers, one Philox block per group of four elements
per draw. The sum runs in float32 (float64 for float64 tensors); float16/bfloat16 are loaded and
stored in their type. One launch takes up to MAX_TERMS stage tensors and MAX_DRAWS draws
(`fastdiff.kernels.limits`); further stage tensors are added by passes over the output with a = 1. Terms and
draws with a zero coefficient are skipped, as in the reference: they cost nothing and never propagate NaN (the
padding draws of `_compiled_draw_count` multiply a finite normal by 0).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from fastdiff.kernels.limits import MAX_DRAWS, MAX_TERMS
from fastdiff.kernels.philox import BLOCK, compute_dtype, normal_tile, round_to


@triton.jit
def as_float(bits, DTYPE: tl.constexpr):
    """A coefficient from its float64 bit pattern (an int64 argument), rounded to DTYPE."""
    return bits.to(tl.int64).to(tl.float64, bitcast=True).to(DTYPE)


@triton.jit(do_not_specialize=["a_bits", "b_bits", "draws"])
def _solver_step_kernel(
    x_ptr,
    k_ptrs,
    out_ptr,
    keys_ptr,
    per_sample,
    blocks_per_sample,
    a_bits,
    b_bits,
    draws,
    NUM_K: tl.constexpr,
    NUM_Z: tl.constexpr,
    BLOCK: tl.constexpr,
    DTYPE: tl.constexpr,
):
    # k_ptrs and b_bits hold NUM_K entries; draws holds NUM_Z tuples (step, stage, stream, c_bits).
    pid = tl.program_id(0)
    b = pid // blocks_per_sample
    g = (pid % blocks_per_sample).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    offs = g[:, None] * 4 + tl.arange(0, 4)[None, :]
    mask = offs < per_sample
    offs = b.to(tl.int64) * per_sample + offs
    acc = as_float(a_bits, DTYPE) * tl.load(x_ptr + offs, mask=mask).to(DTYPE)
    for i in tl.static_range(NUM_K):
        acc += as_float(b_bits[i], DTYPE) * tl.load(k_ptrs[i] + offs, mask=mask).to(DTYPE)
    if NUM_Z > 0:
        key = tl.load(keys_ptr + b)
        for d in tl.static_range(NUM_Z):
            step, stage, stream, c_bits = draws[d]
            acc += as_float(c_bits, DTYPE) * normal_tile(key, g, step, stage, stream, DTYPE)
    tl.store(out_ptr + offs, round_to(acc, out_ptr.dtype.element_ty), mask=mask)


def _compiled_draw_count(count: int) -> int:
    """Draws per launch rounded up (to a multiple of 16 beyond 4) with zero-coefficient draws, so that the varying
    draw counts of Brownian increments compile a handful of kernels, not one per count."""
    return count if count <= 4 else -(-count // 16) * 16


def float_bits(value: float) -> int:
    """The float64 bit pattern of `value` as a signed 64-bit int. Triton passes Python floats as float32
    (the interpreter has no float64 scalars at all), so coefficients travel as bits."""
    return struct.unpack("<q", struct.pack("<d", value))[0]


def nonzero_terms(ks: Sequence[torch.Tensor], bs: Sequence[float]) -> tuple[list[torch.Tensor], list[float]]:
    """The stage tensors with a nonzero coefficient (made contiguous) and their coefficients."""
    kept = [(k.contiguous(), b) for k, b in zip(ks, bs, strict=True) if b != 0.0]
    return [k for k, _ in kept], [b for _, b in kept]


def solver_step(
    x: torch.Tensor,
    ks: Sequence[torch.Tensor],
    a: float,
    bs: Sequence[float],
    keys: torch.Tensor | None,
    draws: Sequence[tuple[int, int, int]],
    cs: Sequence[float],
) -> torch.Tensor:
    """`a x + sum_i bs[i] ks[i] + sum_d cs[d] z_d` as a new row-major tensor; `draws[d]` = (step, stage, stream) in
    [0, 2^32) of the normals z_d under the int64 seeds `keys` [B] (None without draws). The ks are shaped like x
    (`fastdiff.ops.solver_step` checks the arguments)."""
    x, (ks, bs) = x.contiguous(), nonzero_terms(ks, bs)
    kept = [(draw, c) for draw, c in zip(draws, cs, strict=True) if c != 0.0]
    assert len(kept) <= MAX_DRAWS
    kept += [((0, 0, 0), 0.0)] * (_compiled_draw_count(len(kept)) - len(kept))
    draw_args = tuple((step, stage, stream, float_bits(c)) for (step, stage, stream), c in kept)
    keys = None if keys is None else keys.contiguous()
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    if x.numel() == 0:
        return out
    # Without noise the sample boundaries do not matter: one row, so small samples do not cost a program each.
    batch = x.shape[0] if draw_args else 1
    per_sample = x.numel() // batch
    blocks = triton.cdiv(triton.cdiv(per_sample, 4), BLOCK)
    src, a_bits = x, float_bits(a)
    for start in range(0, max(len(ks), 1), MAX_TERMS):
        chunk = range(start, min(start + MAX_TERMS, len(ks)))
        _solver_step_kernel[(batch * blocks,)](
            src,
            tuple(ks[i] for i in chunk),
            out,
            x if keys is None else keys,
            per_sample,
            blocks,
            a_bits,
            tuple(float_bits(bs[i]) for i in chunk),
            draw_args if start == 0 else (),
            NUM_K=len(chunk),
            NUM_Z=len(draw_args) if start == 0 else 0,
            BLOCK=BLOCK,
            DTYPE=compute_dtype(x.dtype),
        )
        src, a_bits = out, float_bits(1.0)
    return out
