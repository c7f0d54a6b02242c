"""Reference for the Itô superposition step (SuperDiff; docs/ALGORITHMS.md section 6), written as the math reads.

One reverse-SDE step sigma -> sigma' (EDM form, Delta = sigma^2 - sigma'^2) of the superposition of M
denoisers, with scores s_i = (D_i(x, sigma) - x) / sigma^2 and z the counter-based Gaussians of the draw:

    kappa = weights (below),   u = sum_i kappa_i s_i,   x' = x + Delta u + sqrt(Delta) z
    ell_i' = ell_i + <x' - x, s_i> - (Delta / 2) ||s_i||^2          (Itô density estimate of log q_i)

- OR:  kappa = softmax(T ell + log w) on the log-densities before the step (max-subtracted).
- AND: kappa makes every ell_i' - b_i equal (b the per-model bias; b = 0 keeps all log-densities equal),
  with sum kappa = 1 and the same z as the move. M = 2 by the closed form of section 6,
      kappa_1 = (num + eps) / (den + 2 eps),  num = l + (Delta/2) <ds, s_1 + s_2> - <x0' - x, ds>,
      den = Delta ||ds||^2,  ds = s_1 - s_2,  x0' = x + Delta s_2 + sqrt(Delta) z,  l = (b_1 - b_2) - (ell_1 - ell_2);
  any M by the (M+1) x (M+1) bordered system  [[Delta G + eps I, -1], [1^T, 0]] [kappa; lambda] = [r; 1],
      G_ij = <s_i, s_j>,  r_i = (b_i - ell_i) - sqrt(Delta) <z, s_i> + (Delta/2) G_ii.
  eps = rcond Delta tr(G) / M is a Tikhonov term that pulls kappa towards uniform weights where the scores
  (nearly) coincide; with eps = 0 both are the exact solutions, and for M = 2 they are the same formula.

Arithmetic in float32, float64 when x is float64; x' is returned in x's dtype, ell' and kappa in the
arithmetic dtype. The Gaussians are those of `fastdiff.reference.philox` for (keys[b], element, step, stage, stream).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fastdiff.dtypes import working_dtype
from fastdiff.reference.philox import philox_normal

MODES = ("or", "and")


def or_weights(ell: torch.Tensor, temperature: float, log_weights: torch.Tensor) -> torch.Tensor:
    """softmax(T ell + log w) over the models, with the row maximum subtracted first. [B, M]."""
    logits = temperature * ell + log_weights
    logits = logits - logits.amax(dim=1, keepdim=True)
    weights = logits.exp()
    return weights / weights.sum(dim=1, keepdim=True)


def regularization(gram: torch.Tensor, delta: float, rcond: float) -> torch.Tensor:
    """eps = rcond Delta tr(G) / M per sample (plus the smallest normal number, so that eps > 0). [B]."""
    m = gram.shape[-1]
    trace = torch.diagonal(gram, dim1=-2, dim2=-1).sum(-1)
    return rcond * delta * trace / m + torch.finfo(gram.dtype).tiny


def and_weights_pair(
    scores: torch.Tensor, z: torch.Tensor, delta: float, ell: torch.Tensor, bias: torch.Tensor, rcond: float
) -> torch.Tensor:
    """AND weights for M = 2 by the closed form of docs/ALGORITHMS.md section 6 (regularized). scores [B, 2, N]."""
    s1, s2 = scores[:, 0], scores[:, 1]
    ds = s1 - s2
    x0_move = delta * s2 + math.sqrt(delta) * z  # x0' - x
    gap = (bias[0] - bias[1]) - (ell[:, 0] - ell[:, 1])
    num = gap + 0.5 * delta * (ds * (s1 + s2)).sum(-1) - (x0_move * ds).sum(-1)
    den = delta * (ds * ds).sum(-1)
    eps = regularization(scores @ scores.mT, delta, rcond)
    kappa1 = (num + eps) / (den + 2.0 * eps)
    return torch.stack([kappa1, 1.0 - kappa1], dim=1)


def solve_bordered(matrix: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """kappa of [[A, -1], [1^T, 0]] [kappa; lambda] = [rhs; 1]: A kappa - lambda 1 = rhs with sum kappa = 1. A [B, M, M]."""
    b, m = rhs.shape
    system = matrix.new_zeros(b, m + 1, m + 1)
    system[:, :m, :m] = matrix
    system[:, :m, m] = -1.0
    system[:, m, :m] = 1.0
    full = torch.cat([rhs, rhs.new_ones(b, 1)], dim=1)
    return torch.linalg.solve(system, full)[:, :m]


def and_weights_system(
    gram: torch.Tensor, zdot: torch.Tensor, delta: float, ell: torch.Tensor, bias: torch.Tensor, rcond: float
) -> torch.Tensor:
    """AND weights for any M from the (M+1) x (M+1) bordered system (regularized). gram [B, M, M], zdot [B, M]."""
    m = zdot.shape[1]
    eps = regularization(gram, delta, rcond)
    matrix = delta * gram + eps[:, None, None] * torch.eye(m, dtype=gram.dtype, device=gram.device)
    rhs = (bias - ell) - math.sqrt(delta) * zdot + 0.5 * delta * torch.diagonal(gram, dim1=-2, dim2=-1)
    return solve_bordered(matrix, rhs)


def ito_step(
    x: torch.Tensor,
    denoised: Sequence[torch.Tensor],
    sigma: float,
    sigma_next: float,
    ell: torch.Tensor,
    keys: torch.Tensor,
    draw: tuple[int, int, int],
    mode: str,
    temperature: float = 1.0,
    log_weights: Sequence[float] | None = None,
    bias: Sequence[float] | None = None,
    rcond: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x', ell', kappa) of one superposed Itô step; see the module docstring. ell: [B, M]."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    acc = working_dtype(x.dtype)
    batch, m = x.shape[0], len(denoised)
    flat = x.reshape(batch, -1).to(acc)
    scores = torch.stack([(d.reshape(batch, -1).to(acc) - flat) / sigma**2 for d in denoised], dim=1)  # [B, M, N]
    delta = (sigma - sigma_next) * (sigma + sigma_next)
    step, stage, stream = draw
    z = philox_normal(keys, flat.shape[1], step, stage, stream, acc)
    ell = ell.to(acc)
    log_w = torch.tensor(log_weights if log_weights is not None else [0.0] * m, dtype=acc, device=x.device)
    offsets = torch.tensor(bias if bias is not None else [0.0] * m, dtype=acc, device=x.device)
    gram = scores @ scores.mT
    zdot = (scores @ z[:, :, None]).squeeze(-1)
    if mode == "or":
        kappa = or_weights(ell, temperature, log_w)
    elif m == 2:
        kappa = and_weights_pair(scores, z, delta, ell, offsets, rcond)
    else:
        kappa = and_weights_system(gram, zdot, delta, ell, offsets, rcond)
    move = delta * (kappa[:, :, None] * scores).sum(1) + math.sqrt(delta) * z  # x' - x
    x_next = (flat + move).to(x.dtype).view(x.shape)
    ell_next = ell + (scores @ move[:, :, None]).squeeze(-1) - 0.5 * delta * torch.diagonal(gram, dim1=-2, dim2=-1)
    return x_next, ell_next, kappa
