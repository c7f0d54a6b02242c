"""Reference counter-based Gaussians: Philox4x32-10 (Salmon et al. 2011) plus Box-Muller.

Layout (the contract every backend reproduces bit for bit in its integers):
  key     = (seed mod 2^32, seed >> 32) of the sample's 64-bit seed
  counter = (g, step, stage, stream) with g = element // 4 (element index within the sample)
  words r0..r3 of philox(counter, key); u_j = (r_j >> 9) * 2^-23 + 2^-24, in (0, 1)
  element 4g+0 = sqrt(-2 log u0) cos(2 pi u1),  4g+1 = sqrt(-2 log u0) sin(2 pi u1)
  element 4g+2 = sqrt(-2 log u2) cos(2 pi u3),  4g+3 = sqrt(-2 log u2) sin(2 pi u3)
Uniforms are exact in float32; the transcendental functions run in float32, or in float64
when float64 output is asked for. 32-bit words live in int64 tensors, so this runs on any
device PyTorch supports.
"""

from __future__ import annotations

import math

import torch

from fastdiff.dtypes import working_dtype

PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
MASK32 = 0xFFFFFFFF
ROUNDS = 10


def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of the 64-bit product of 32-bit `a` and constant `m`, in int64."""
    m_hi, m_lo = m >> 16, m & 0xFFFF
    t = a * m_lo  # < 2^48
    u = a * m_hi  # < 2^48
    hi = (u + (t >> 16)) >> 16
    lo = (((u & 0xFFFF) << 16) + t) & MASK32
    return hi, lo


def philox4x32(counter: tuple[torch.Tensor, ...], key: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Philox4x32-10 on broadcastable int64 tensors holding 32-bit words."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for r in range(ROUNDS):
        if r > 0:
            k0 = (k0 + PHILOX_W0) & MASK32
            k1 = (k1 + PHILOX_W1) & MASK32
        hi0, lo0 = _mulhilo(c0, PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def uniform_from_bits(r: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """u = (r >> 9) 2^-23 + 2^-24: 2^23 levels strictly inside (0, 1), exact in float32."""
    return ((r >> 9).to(dtype) + 0.5) * (2.0**-23)


def philox_normal(
    keys: torch.Tensor, numel: int, step: int, stage: int, stream: int, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Standard normals of shape `[B, numel]` for per-sample 64-bit `keys` (int64 `[B]`)."""
    compute = working_dtype(dtype)
    device = keys.device
    groups = (numel + 3) // 4
    g = torch.arange(groups, dtype=torch.int64, device=device)
    k0 = (keys & MASK32).unsqueeze(1)
    k1 = ((keys >> 32) & MASK32).unsqueeze(1)
    counter = (
        g.unsqueeze(0).expand(keys.shape[0], groups),
        torch.full_like(g, step & MASK32).unsqueeze(0),
        torch.full_like(g, stage & MASK32).unsqueeze(0),
        torch.full_like(g, stream & MASK32).unsqueeze(0),
    )
    r0, r1, r2, r3 = philox4x32(counter, (k0, k1))
    two_pi = 2.0 * math.pi
    rad_a = torch.sqrt(-2.0 * torch.log(uniform_from_bits(r0, compute)))
    ang_a = two_pi * uniform_from_bits(r1, compute)
    rad_b = torch.sqrt(-2.0 * torch.log(uniform_from_bits(r2, compute)))
    ang_b = two_pi * uniform_from_bits(r3, compute)
    z = torch.stack(
        [rad_a * torch.cos(ang_a), rad_a * torch.sin(ang_a), rad_b * torch.cos(ang_b), rad_b * torch.sin(ang_b)], dim=-1
    )
    return z.reshape(keys.shape[0], groups * 4)[:, :numel].to(dtype)
