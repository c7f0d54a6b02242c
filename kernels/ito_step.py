"""The fused Itô superposition step in Triton (fastdiff/reference/ito_step.py has the math).

Two launches per step, on a grid of (sample, part) programs, a part being a fixed range of a sample's elements:
- `_reduce_kernel`: reads x and the M denoised outputs once, forms e_i = D_i - x (s_i = e_i / sigma^2), generates z
  from the counter stream in registers, and writes the part's sums of <e_i, e_j>, <z, e_i> and, for AND, of the
  centred <e_i - e_bar, e_j - e_bar>, <z, e_i - e_bar>. OR's weights are known before the step (softmax of the
  log-densities), so for OR this pass also writes x'.
- `_finalize_kernel`: every program adds its sample's part sums (a fixed-order tree: deterministic), computes
  kappa (AND: an M x M symmetric positive definite solve by elimination on a register tile) and the ell updates in
  float64; the program of part 0 stores kappa and ell'. For AND each program then moves its part:
  x' = x + sum_i (Delta kappa_i / sigma^2) e_i + sqrt(Delta) z, with z generated again.
Element sums run in float32 (float64 for float64 x); float16/bfloat16 are loaded and stored in their type.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import triton
import triton.language as tl
from fastdiff.kernels.limits import MAX_PARTS, PART_MIN
from fastdiff.kernels.philox import compute_dtype, normal_tile, round_to
from fastdiff.kernels.solver_step import as_float, float_bits


def tile_groups(padded_models: int) -> int:
    """Groups of four elements per tile: the [M, M, tile] Gram products stay near 2048 values."""
    return max(16, 512 // (padded_models * padded_models))


@triton.jit
def _load_models(d_ptrs, x, offs, mask, rows, M: tl.constexpr, MP: tl.constexpr, TILE: tl.constexpr, DTYPE: tl.constexpr):
    """E [MP, TILE]: row i = D_i - x on the tile (zero rows past M and zero columns outside the mask)."""
    e = tl.zeros((MP, TILE), DTYPE)
    for i in tl.static_range(M):
        d = tl.load(d_ptrs[i] + offs, mask=mask, other=0.0).to(DTYPE)
        e = tl.where(rows[:, None] == i, (d - x)[None, :], e)
    return e


@triton.jit
def _tile(x_ptr, row, begin, t, per_sample, TILE: tl.constexpr, DTYPE: tl.constexpr):
    """Tile t of the part starting at `begin` of the sample at `row`: (start, mask, offsets, x), x zero outside."""
    start = begin + t * TILE
    local = start + tl.arange(0, TILE)
    mask = local < per_sample
    offs = row + local
    return start, mask, offs, tl.load(x_ptr + offs, mask=mask, other=0.0).to(DTYPE)


@triton.jit
def _noise(key, tile_start, step, stage, stream, GROUPS: tl.constexpr, DTYPE: tl.constexpr):
    g = tile_start // 4 + tl.arange(0, GROUPS).to(tl.int64)
    return tl.reshape(normal_tile(key, g, step, stage, stream, DTYPE), (GROUPS * 4,))


@triton.jit
def _or_weights(ell_ptr, log_w, b, rows, temp_bits, M: tl.constexpr):
    """softmax(T ell + log w) over the M models (max subtracted), float64 [MP]; zero past M."""
    valid = rows < M
    ell = tl.load(ell_ptr + b * M + rows, mask=valid, other=0.0).to(tl.float64)
    logits = tl.where(valid, as_float(temp_bits, tl.float64) * ell + log_w, float("-inf"))
    w = tl.exp(logits - tl.max(logits, axis=0))
    return w / tl.sum(w, axis=0)


@triton.jit
def _per_model(bits, rows, M: tl.constexpr, MP: tl.constexpr):
    """[MP] float64 vector from M float64 bit patterns (zero past M)."""
    v = tl.zeros((MP,), tl.float64)
    for i in tl.static_range(M):
        v = tl.where(rows == i, as_float(bits[i], tl.float64), v)
    return v


@triton.jit(do_not_specialize=["step", "stage", "stream", "delta_bits", "sqrt_bits", "inv_bits", "temp_bits"])
def _reduce_kernel(
    x_ptr, d_ptrs, out_ptr, part_ptr, ell_ptr, keys_ptr,
    per_sample, parts, part_len, step, stage, stream,
    delta_bits, sqrt_bits, inv_bits, temp_bits, log_w_bits,
    M: tl.constexpr, MP: tl.constexpr, AND: tl.constexpr, GROUPS: tl.constexpr, TILE: tl.constexpr, N_TILES: tl.constexpr,
    DTYPE: tl.constexpr,
):
    RT: tl.constexpr = 2 * MP * MP + 2 * MP
    pid = tl.program_id(0)
    b = pid // parts
    p = pid % parts
    rows = tl.arange(0, MP)
    key = tl.load(keys_ptr + b)
    row = b.to(tl.int64) * per_sample
    begin = p.to(tl.int64) * part_len
    sqrt_delta = as_float(sqrt_bits, DTYPE)
    if not AND:
        kappa = _or_weights(ell_ptr, _per_model(log_w_bits, rows, M, MP), b, rows, temp_bits, M)
        coef = (as_float(delta_bits, tl.float64) * as_float(inv_bits, tl.float64) * kappa).to(DTYPE)
    gram = tl.zeros((MP, MP), DTYPE)
    zdot = tl.zeros((MP,), DTYPE)
    cgram = tl.zeros((MP, MP), DTYPE)
    czdot = tl.zeros((MP,), DTYPE)
    for t in range(N_TILES):
        start, mask, offs, x = _tile(x_ptr, row, begin, t, per_sample, TILE, DTYPE)
        z = tl.where(mask, _noise(key, start, step, stage, stream, GROUPS, DTYPE), 0.0)
        e = _load_models(d_ptrs, x, offs, mask, rows, M, MP, TILE, DTYPE)
        gram += tl.sum(e[:, None, :] * e[None, :, :], axis=2)
        zdot += tl.sum(e * z[None, :], axis=1)
        if AND:
            centred = tl.where(rows[:, None] < M, e - tl.sum(e, axis=0)[None, :] / M, 0.0)
            cgram += tl.sum(centred[:, None, :] * centred[None, :, :], axis=2)
            czdot += tl.sum(centred * z[None, :], axis=1)
        else:
            moved = x + tl.sum(coef[:, None] * e, axis=0) + sqrt_delta * z
            tl.store(out_ptr + offs, round_to(moved, out_ptr.dtype.element_ty), mask=mask)
    base = part_ptr + pid.to(tl.int64) * RT
    square = rows[:, None] * MP + rows[None, :]
    tl.store(base + square, gram.to(tl.float64))
    tl.store(base + MP * MP + rows, zdot.to(tl.float64))
    tl.store(base + MP * MP + MP + square, cgram.to(tl.float64))
    tl.store(base + 2 * MP * MP + MP + rows, czdot.to(tl.float64))


@triton.jit
def _and_weights(gram, cgram, czdot, ell, bias, rows, delta, sqrt_delta, rcond, M: tl.constexpr):
    """AND: (Delta C + eps I) a = Q(b - ell) - sqrt(Delta) cz + (Delta/2) Q diag C; kappa = 1/M + centred a. float64."""
    valid = rows < M
    eye = rows[:, None] == rows[None, :]
    diag_g = tl.sum(tl.where(eye, gram, 0.0), axis=1)
    diag_c = tl.sum(tl.where(eye, cgram, 0.0), axis=1)
    eps = rcond * delta * tl.sum(diag_g, axis=0) / M + 2.2250738585072014e-308
    t = tl.where(valid, bias - ell, 0.0)
    t = tl.where(valid, t - tl.sum(t, axis=0) / M, 0.0)
    dc = tl.where(valid, diag_c - tl.sum(diag_c, axis=0) / M, 0.0)
    rhs = tl.where(valid, t - sqrt_delta * czdot + 0.5 * delta * dc, 0.0)
    a = tl.where(eye, tl.where(valid[:, None], eps, 1.0), 0.0) + delta * cgram
    for k in tl.static_range(M):
        pivot_row = tl.sum(tl.where(rows[:, None] == k, a, 0.0), axis=0)
        pivot = tl.sum(tl.where(rows == k, pivot_row, 0.0), axis=0)
        column = tl.sum(tl.where(rows[None, :] == k, a, 0.0), axis=1)
        f = tl.where(rows > k, column / pivot, 0.0)
        a = a - f[:, None] * pivot_row[None, :]
        rhs = rhs - f * tl.sum(tl.where(rows == k, rhs, 0.0), axis=0)
    sol = tl.zeros_like(rhs)
    for kk in tl.static_range(M):
        k = M - 1 - kk
        line = tl.sum(tl.where(rows[:, None] == k, a, 0.0), axis=0)
        rest = tl.sum(tl.where(rows > k, line * sol, 0.0), axis=0)
        value = (tl.sum(tl.where(rows == k, rhs, 0.0), axis=0) - rest) / tl.sum(tl.where(rows == k, line, 0.0), axis=0)
        sol = tl.where(rows == k, value, sol)
    sol = tl.where(valid, sol - tl.sum(sol, axis=0) / M, 0.0)
    return tl.where(valid, 1.0 / M + sol, 0.0)


@triton.jit(do_not_specialize=["step", "stage", "stream", "delta_bits", "sqrt_bits", "inv_bits", "temp_bits", "rcond_bits"])
def _finalize_kernel(
    x_ptr, d_ptrs, out_ptr, part_ptr, ell_ptr, ell_out_ptr, kappa_ptr, keys_ptr,
    per_sample, parts, part_len, step, stage, stream,
    delta_bits, sqrt_bits, inv_bits, temp_bits, rcond_bits, log_w_bits, bias_bits,
    M: tl.constexpr, MP: tl.constexpr, AND: tl.constexpr, PP: tl.constexpr, GROUPS: tl.constexpr, TILE: tl.constexpr,
    N_TILES: tl.constexpr,
    DTYPE: tl.constexpr,
):
    RT: tl.constexpr = 2 * MP * MP + 2 * MP
    moves = parts if AND else 1
    pid = tl.program_id(0)
    b = pid // moves
    p = pid % moves
    rows = tl.arange(0, MP)
    valid = rows < M
    delta = as_float(delta_bits, tl.float64)
    sqrt_delta = as_float(sqrt_bits, tl.float64)
    inv2 = as_float(inv_bits, tl.float64)
    inv4 = inv2 * inv2
    # the sample's part sums, added in a fixed tree order
    q = tl.arange(0, PP)
    base = part_ptr + b.to(tl.int64) * parts * RT + q[:, None, None] * RT
    qmask = (q < parts)[:, None, None]
    square = (rows[:, None] * MP + rows[None, :])[None, :, :]
    vector = rows[None, :, None]
    gram = tl.sum(tl.load(base + square, mask=qmask, other=0.0), axis=0) * inv4
    zdot = tl.sum(tl.sum(tl.load(base + MP * MP + vector, mask=qmask, other=0.0), axis=0), axis=1) * inv2
    ell = tl.load(ell_ptr + b * M + rows, mask=valid, other=0.0).to(tl.float64)
    if AND:
        cgram = tl.sum(tl.load(base + MP * MP + MP + square, mask=qmask, other=0.0), axis=0) * inv4
        czdot = tl.sum(tl.sum(tl.load(base + 2 * MP * MP + MP + vector, mask=qmask, other=0.0), axis=0), axis=1) * inv2
        kappa = _and_weights(gram, cgram, czdot, ell, _per_model(bias_bits, rows, M, MP), rows, delta, sqrt_delta,
                             as_float(rcond_bits, tl.float64), M)
    else:
        kappa = _or_weights(ell_ptr, _per_model(log_w_bits, rows, M, MP), b, rows, temp_bits, M)
    eye = rows[:, None] == rows[None, :]
    pull = tl.sum(gram * kappa[None, :], axis=1)
    ell_next = ell + delta * pull + sqrt_delta * zdot - 0.5 * delta * tl.sum(tl.where(eye, gram, 0.0), axis=1)
    first = valid & (p == 0)
    tl.store(ell_out_ptr + b * M + rows, ell_next.to(ell_out_ptr.dtype.element_ty), mask=first)
    tl.store(kappa_ptr + b * M + rows, kappa.to(kappa_ptr.dtype.element_ty), mask=first)
    if AND:
        coef = (delta * inv2 * kappa).to(DTYPE)
        noise_scale = sqrt_delta.to(DTYPE)
        key = tl.load(keys_ptr + b)
        row = b.to(tl.int64) * per_sample
        begin = p.to(tl.int64) * part_len
        for t in range(N_TILES):
            start, mask, offs, x = _tile(x_ptr, row, begin, t, per_sample, TILE, DTYPE)
            z = _noise(key, start, step, stage, stream, GROUPS, DTYPE)
            e = _load_models(d_ptrs, x, offs, mask, rows, M, MP, TILE, DTYPE)
            moved = x + tl.sum(coef[:, None] * e, axis=0) + noise_scale * z
            tl.store(out_ptr + offs, round_to(moved, out_ptr.dtype.element_ty), mask=mask)


def partition(per_sample: int, tile: int) -> tuple[int, int]:
    """(parts, part_len): part_len a multiple of `tile`, a function of the sample size only."""
    tiles = max(1, triton.cdiv(per_sample, tile))
    parts = min(MAX_PARTS, max(1, per_sample // PART_MIN))
    per_part = triton.cdiv(tiles, parts)
    return triton.cdiv(tiles, per_part), per_part * tile


def ito_step(
    x: torch.Tensor,
    denoised: Sequence[torch.Tensor],
    sigma: float,
    sigma_next: float,
    ell: torch.Tensor,
    keys: torch.Tensor,
    draw: tuple[int, int, int],
    mode: int,
    temperature: float,
    log_weights: Sequence[float],
    bias: Sequence[float],
    rcond: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x', ell', kappa) for x and denoised [B, ...], ell [B, M] and keys [B] (`fastdiff.ops.ito_step` checks them);
    mode 0 = OR, 1 = AND."""
    m = len(denoised)
    x, denoised, ell, keys = x.contiguous(), [d.contiguous() for d in denoised], ell.contiguous(), keys.contiguous()
    batch = x.shape[0]
    per_sample = x.numel() // batch if batch else 0
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    ell_next = torch.empty_like(ell)
    kappa = torch.empty_like(ell)
    if batch == 0:
        return out, ell_next, kappa
    padded = triton.next_power_of_2(m)
    groups = tile_groups(padded)
    parts, part_len = partition(per_sample, 4 * groups)
    workspace = torch.empty((batch * parts * (2 * padded * padded + 2 * padded),), dtype=torch.float64, device=x.device)
    delta = (sigma - sigma_next) * (sigma + sigma_next)
    scalars = (float_bits(delta), float_bits(delta**0.5), float_bits(1.0 / sigma**2), float_bits(temperature))
    log_w = tuple(float_bits(w) for w in log_weights)
    tile = 4 * groups
    common = dict(M=m, MP=padded, AND=mode == 1, GROUPS=groups, TILE=tile, N_TILES=part_len // tile, DTYPE=compute_dtype(x.dtype))
    _reduce_kernel[(batch * parts,)](
        x, tuple(denoised), out, workspace, ell, keys, per_sample, parts, part_len, *draw, *scalars, log_w, **common,
    )
    _finalize_kernel[(batch * (parts if mode == 1 else 1),)](
        x, tuple(denoised), out, workspace, ell, ell_next, kappa, keys, per_sample, parts, part_len, *draw, *scalars,
        float_bits(rcond), log_w, tuple(float_bits(v) for v in bias), PP=triton.next_power_of_2(parts), **common,
    )
    return out, ell_next, kappa
