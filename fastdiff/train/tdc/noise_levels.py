"""Noise levels of one TDC group: EDM's training law ln sigma ~ N(P_mean, P_std^2) restricted to [lo, hi].

A standard normal draw n maps to the restricted law by inversion in float64:
    u = Phi(a) + (Phi(b) - Phi(a)) Phi(n),   ln sigma = P_mean + P_std Phi^-1(u),
with a = (ln lo - P_mean) / P_std and b = (ln hi - P_mean) / P_std (lo = 0 and hi = inf allowed); for
[0, inf] this is EDM's sigma = exp(P_mean + P_std n) itself. The group's fine-tuning objective is the base
DSM objective conditioned on the group, with EDM's weighting lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from fastdiff.train.draws import make_draws
from fastdiff.train.losses import edm_weight

# the slots of `fastdiff.train.losses.dsm_loss`: with the same per-sample seeds, [0, inf] draws its noise exactly
SLOT_SIGMA, SLOT_EPS = 0, 1
_SQRT2 = math.sqrt(2.0)


def _phi(z: float) -> float:
    return 0.5 * math.erfc(-z / _SQRT2)


def restrict_lognormal(n: torch.Tensor, lo: float, hi: float, P_mean: float = -1.2, P_std: float = 1.2) -> torch.Tensor:
    """Map standard normal draws n to sigmas of the log-normal (P_mean, P_std) restricted to [lo, hi] (float64)."""
    if not 0 <= lo < hi:
        raise ValueError(f"need 0 <= lo < hi, got lo={lo}, hi={hi}")
    a = 0.0 if lo == 0 else _phi((math.log(lo) - P_mean) / P_std)
    b = 1.0 if math.isinf(hi) else _phi((math.log(hi) - P_mean) / P_std)
    if not b > a:
        raise ValueError(f"the range [{lo}, {hi}] has no probability under ln sigma ~ N({P_mean}, {P_std}^2) in float64")
    if a == 0.0 and b == 1.0:
        return (P_mean + P_std * n.double()).exp()
    u = a + (b - a) * torch.special.ndtr(n.double())
    u = u.clamp(min=torch.finfo(torch.float64).tiny, max=1.0 - torch.finfo(torch.float64).eps)
    return (P_mean + P_std * torch.special.ndtri(u)).exp().clamp(lo, hi)


def truncated_lognormal(
    n: int, lo: float, hi: float, *, P_mean: float = -1.2, P_std: float = 1.2, generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """n float32 sigmas from the log-normal (P_mean, P_std) restricted to [lo, hi]."""
    z = torch.randn(n, generator=generator, dtype=torch.float64)
    return restrict_lognormal(z, lo, hi, P_mean, P_std).to(device=device, dtype=torch.float32)


def weighted_error(denoised: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """Per-sample lambda(sigma) mean_i (D_i - x0_i)^2, float64 [B]."""
    return edm_weight(sigma.double(), sigma_data) * (denoised.double() - x0.double()).flatten(1).pow(2).mean(dim=1)


def group_dsm_loss(
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x0: torch.Tensor, lo: float, hi: float, *,
    P_mean: float = -1.2, P_std: float = 1.2, sigma_data: float = 0.5, generator: torch.Generator | None = None,
    seed: Sequence[int] | torch.Tensor | None = None,
) -> torch.Tensor:
    """`fastdiff.train.dsm_loss` with sigma from the group's restricted log-normal: mean lambda |D(x0 + sigma eps) - x0|^2
    / numel. Randomness as in dsm_loss (`generator`, or per-sample counter-stream `seed`s)."""
    draws = make_draws(generator, seed)
    n = draws.normal(x0.shape[0], (), SLOT_SIGMA, x0.dtype, x0.device)
    sigma = restrict_lognormal(n, lo, hi, P_mean, P_std).to(x0.dtype)
    eps = draws.normal(x0.shape[0], tuple(x0.shape[1:]), SLOT_EPS, x0.dtype, x0.device)
    view = (-1,) + (1,) * (x0.ndim - 1)
    denoised = denoiser(x0 + sigma.view(view) * eps, sigma)
    return (edm_weight(sigma, sigma_data) * (denoised - x0).pow(2).flatten(1).mean(1)).mean()
