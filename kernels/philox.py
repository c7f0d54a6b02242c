"""Counter-based standard normals in Triton, the function of `fastdiff.reference.philox`.

Element e of sample b, with g = e // 4:
  (r0, r1, r2, r3) = Philox4x32-10(counter = (g, step, stage, stream), key = (seed mod 2^32, seed >> 32))
  u_j = ((r_j >> 9) + 1/2) 2^-23, in (0, 1)
  z_{4g}, z_{4g+1} = sqrt(-2 log u0) (cos, sin)(2 pi u1),  z_{4g+2}, z_{4g+3} = sqrt(-2 log u2) (cos, sin)(2 pi u3)
The words are bit-exact; the math runs in float32 (float64 for float64 output). The angle is reduced
exactly, 4u = q + f in integers, so only (pi/2) f is rounded (the CUDA kernel's sincospif does the same).
One program computes BLOCK consecutive groups of four elements of one sample.
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from fastdiff.dtypes import working_dtype
from fastdiff.reference import philox as reference

# The Philox4x32-10 constants of the reference, which defines the function.
PHILOX_M0 = tl.constexpr(reference.PHILOX_M0)
PHILOX_M1 = tl.constexpr(reference.PHILOX_M1)
PHILOX_W0 = tl.constexpr(reference.PHILOX_W0)
PHILOX_W1 = tl.constexpr(reference.PHILOX_W1)
ROUNDS = tl.constexpr(reference.ROUNDS)
# (pi/2) 2^-22: one unit of the integer angle n = 2^22 4u, in quarter turns.
QUARTER_TURN_UNIT = tl.constexpr(math.pi / 2 * 2.0**-22)
BLOCK = 256  # groups of four elements per program


@triton.jit
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 on uint32 tensors: ten rounds of (c0, c1, c2, c3) <- (hi1^c1^k0, lo1, hi0^c3^k1, lo0)
    with hi0/lo0 = mulhilo(c0, M0), hi1/lo1 = mulhilo(c2, M1), the key bumped by (W0, W1) between rounds."""
    for r in tl.static_range(ROUNDS):
        if r > 0:
            k0 = k0 + PHILOX_W0
            k1 = k1 + PHILOX_W1
        hi0 = tl.umulhi(c0, PHILOX_M0)
        lo0 = c0 * PHILOX_M0
        hi1 = tl.umulhi(c2, PHILOX_M1)
        lo1 = c2 * PHILOX_M1
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


@triton.jit
def uniform(r, DTYPE: tl.constexpr):
    """u = ((r >> 9) + 1/2) 2^-23: 2^23 levels strictly inside (0, 1), exact in float32."""
    return ((r >> 9).to(DTYPE) + 0.5) * 2.0**-23


@triton.jit
def sincos_turn(r, DTYPE: tl.constexpr):
    """(sin, cos)(2 pi u) for u = uniform(r). n = 2^22 4u = 2 (r >> 9) + 1 is an odd integer; q = round(4u)
    quarter turns are taken off in integers and sin/cos run on (pi/2) f, |f| < 1/2."""
    n = ((r >> 9) * 2 + 1).to(tl.int32)
    q = (n + (1 << 21)) >> 22
    x = (n - (q << 22)).to(DTYPE) * tl.full((), QUARTER_TURN_UNIT, DTYPE)
    s = tl.sin(x)
    c = tl.cos(x)
    # (sin, cos)(x + pi/2) = (cos x, -sin x); (sin, cos)(x + pi) = (-sin x, -cos x)
    odd = (q & 1) != 0
    s_q = tl.where(odd, c, s)
    c_q = tl.where(odd, -s, c)
    half = (q & 2) != 0
    return tl.where(half, -s_q, s_q), tl.where(half, -c_q, c_q)


@triton.jit
def box_muller4(r0, r1, r2, r3, DTYPE: tl.constexpr):
    """Four normals from four words: sqrt(-2 log u0) (cos, sin)(2 pi u1), sqrt(-2 log u2) (cos, sin)(2 pi u3)."""
    if DTYPE == tl.float64:
        rad_a = tl.sqrt(-2.0 * tl.log(uniform(r0, DTYPE)))
        rad_b = tl.sqrt(-2.0 * tl.log(uniform(r2, DTYPE)))
    else:
        rad_a = tl.sqrt_rn(-2.0 * tl.log(uniform(r0, DTYPE)))
        rad_b = tl.sqrt_rn(-2.0 * tl.log(uniform(r2, DTYPE)))
    sin_a, cos_a = sincos_turn(r1, DTYPE)
    sin_b, cos_b = sincos_turn(r3, DTYPE)
    return rad_a * cos_a, rad_a * sin_a, rad_b * cos_b, rad_b * sin_b


@triton.jit
def interleave4(v0, v1, v2, v3):
    """[N] x 4 -> [N, 4] with row i = (v0[i], v1[i], v2[i], v3[i])."""
    return tl.reshape(tl.join(tl.join(v0, v2), tl.join(v1, v3)), (v0.shape[0], 4))


@triton.jit
def round_to(v, DST: tl.constexpr):
    """v rounded to nearest even in DST. Triton 3.6's interpreter truncates float32 -> bfloat16, so that
    rounding is done on the bits here (a no-op change on GPUs, whose conversion already rounds)."""
    if DST == tl.bfloat16:
        bits = v.to(tl.float32).to(tl.uint32, bitcast=True)
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
        return bits.to(tl.float32, bitcast=True).to(DST)
    else:
        return v.to(DST)


@triton.jit
def philox_block(key, g, step, stage, stream):
    """Words of counter (g, step, stage, stream) under the int64 seed `key`, for a [N] tensor of groups g."""
    c0 = g.to(tl.uint32)
    zero = tl.zeros_like(c0)
    return philox4x32_10(
        c0,
        zero + step.to(tl.uint32),
        zero + stage.to(tl.uint32),
        zero + stream.to(tl.uint32),
        key.to(tl.uint32),
        (key >> 32).to(tl.uint32),
    )


@triton.jit
def normal_tile(key, g, step, stage, stream, DTYPE: tl.constexpr):
    """[N, 4] normals of groups g (an int64 [N] tensor): row i holds elements 4 g[i] .. 4 g[i] + 3."""
    r0, r1, r2, r3 = philox_block(key, g, step, stage, stream)
    z0, z1, z2, z3 = box_muller4(r0, r1, r2, r3, DTYPE)
    return interleave4(z0, z1, z2, z3)


@triton.jit(do_not_specialize=["step", "stage", "stream"])
def _philox_normal_kernel(
    keys_ptr, out_ptr, numel, blocks_per_sample, step, stage, stream, BLOCK: tl.constexpr, DTYPE: tl.constexpr
):
    pid = tl.program_id(0)
    b = pid // blocks_per_sample
    g = (pid % blocks_per_sample).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    z = normal_tile(tl.load(keys_ptr + b), g, step, stage, stream, DTYPE)
    offs = g[:, None] * 4 + tl.arange(0, 4)[None, :]
    tl.store(out_ptr + b.to(tl.int64) * numel + offs, round_to(z, out_ptr.dtype.element_ty), mask=offs < numel)


@triton.jit(do_not_specialize=["first_group", "step", "stage", "stream"])
def _philox_words_kernel(keys_ptr, out_ptr, groups, blocks_per_sample, first_group, step, stage, stream, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    b = pid // blocks_per_sample
    g = (pid % blocks_per_sample).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    r0, r1, r2, r3 = philox_block(tl.load(keys_ptr + b), first_group + g, step, stage, stream)
    words = interleave4(r0, r1, r2, r3).to(tl.int64)
    offs = b.to(tl.int64) * groups * 4 + g[:, None] * 4 + tl.arange(0, 4)[None, :]
    tl.store(out_ptr + offs, words, mask=g[:, None] < groups)


def compute_dtype(dtype: torch.dtype) -> tl.dtype:
    """The Triton type the math runs in for outputs of `dtype`: `fastdiff.dtypes.working_dtype`."""
    return tl.float64 if working_dtype(dtype) == torch.float64 else tl.float32


def philox_normal(
    keys: torch.Tensor, numel: int, step: int, stage: int, stream: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Standard normals `[B, numel]` of the int64 seeds `keys` `[B]`; step, stage, stream in [0, 2^32)."""
    keys = keys.contiguous()
    out = torch.empty((keys.shape[0], numel), dtype=dtype, device=keys.device)
    blocks = triton.cdiv(triton.cdiv(numel, 4), BLOCK)
    if out.numel() > 0:
        _philox_normal_kernel[(keys.shape[0] * blocks,)](
            keys, out, numel, blocks, step, stage, stream, BLOCK=BLOCK, DTYPE=compute_dtype(dtype)
        )
    return out


def philox_words(keys: torch.Tensor, groups: int, step: int, stage: int, stream: int, first_group: int = 0) -> torch.Tensor:
    """Raw words `[B, groups, 4]` (as int64 in [0, 2^32)) of counters (first_group + g mod 2^32, step, stage, stream)."""
    keys = keys.contiguous()
    out = torch.empty((keys.shape[0], groups, 4), dtype=torch.int64, device=keys.device)
    blocks = triton.cdiv(groups, BLOCK)
    if out.numel() > 0:
        _philox_words_kernel[(keys.shape[0] * blocks,)](keys, out, groups, blocks, first_group, step, stage, stream, BLOCK=BLOCK)
    return out
