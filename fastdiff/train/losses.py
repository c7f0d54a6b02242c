"""Training losses: EDM denoising score matching and the CDM consistency term (docs/ALGORITHMS.md section 8).

DSM (Karras et al. 2022, eq. 2 and Table 1): sigma = exp(P_mean + P_std n), n ~ N(0, 1); x = x0 + sigma eps;

    L_dsm = E[ lambda(sigma) |D(x, sigma) - x0|^2 ],   lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2.

CDM (Daras et al. 2023, "Consistent Diffusion Models"): with sigma' = max(sigma - U[0, max_step], sigma_min) (and
sigma' = sigma where sigma is below sigma_min already) and
x'_1, x'_2 two independent reverse-SDE Euler-Maruyama chains from the same x to sigma' (no gradient),

    L_cp = E[ <D(x'_1, sigma') - D(x, sigma), D(x'_2, sigma') - D(x, sigma)> ],

an unbiased estimate of |E[D(x', sigma') | x] - D(x, sigma)|^2 (it may be negative on a batch). The exact denoiser
is consistent (E[D(x', sigma') | x] = D(x, sigma) by the tower property), so L_cp vanishes for it up to the
chains' discretization error. Gradients reach the network through the three D calls only.

Squared norms and inner products are averaged over the elements of a sample (and then over the batch), so both
terms are per-dimension and `lambda_cp` means what it means with EDM's summed loss.
Randomness comes from `generator` (torch's global generator when None) or from per-sample counter streams
`seed` (one 64-bit seed per sample, see `fastdiff.train.draws`): then a sample's loss term does not depend
on the batch around it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from fastdiff.train.draws import Draws, make_draws
from fastdiff.validation import check_number, check_positive, check_positive_int, check_sample

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Seeds = Sequence[int] | torch.Tensor | None

# Draw slots: which Gaussians play which role (counter streams address them by slot).
_SLOT_SIGMA, _SLOT_EPS, _SLOT_STEP_BACK = 0, 1, 2
_SLOT_CHAINS = 16  # chain c (0 or 1), step i uses slot 16 + 16 c + i


def _check_common(denoiser: object, x0: object, P_mean: float, P_std: float) -> None:
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable as denoiser(x, sigma), got {type(denoiser).__name__}")
    check_sample(x0, "x0")
    if x0.ndim < 2:
        raise ValueError(f"x0 must have shape [B, ...] with at least one data dimension, got shape {tuple(x0.shape)}")
    check_number(P_mean, "P_mean", -math.inf)
    check_positive(P_std, "P_std")


def _view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.view((-1,) + (1,) * (like.ndim - 1))


def _per_sample_mean(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(1).mean(1)


def edm_weight(sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    """EDM's loss weight lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 (unit effective weight, EDM Table 1)."""
    return (sigma**2 + sigma_data**2) / (sigma * sigma_data) ** 2


def _noised(
    x0: torch.Tensor, P_mean: float, P_std: float, generator: torch.Generator | None, seed: Seeds
) -> tuple[Draws, torch.Tensor, torch.Tensor]:
    """(the batch's draws, x, sigma): sigma = exp(P_mean + P_std n) [B], x = x0 + sigma eps."""
    draws = make_draws(generator, seed)
    n = draws.normal(x0.shape[0], (), _SLOT_SIGMA, x0.dtype, x0.device)
    sigma = (P_mean + P_std * n).exp()
    eps = draws.normal(x0.shape[0], tuple(x0.shape[1:]), _SLOT_EPS, x0.dtype, x0.device)
    return draws, x0 + _view(sigma, x0) * eps, sigma


def _dsm_terms(denoised: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_data: float) -> torch.Tensor:
    return edm_weight(sigma, sigma_data) * _per_sample_mean((denoised - x0) ** 2)


def dsm_loss(
    denoiser: Denoiser,
    x0: torch.Tensor,
    *,
    P_mean: float = -1.2,
    P_std: float = 1.2,
    sigma_data: float = 0.5,
    generator: torch.Generator | None = None,
    seed: Seeds = None,
) -> torch.Tensor:
    """EDM denoising score matching, a 0-d tensor: mean over the batch of lambda(sigma) |D(x, sigma) - x0|^2 / numel.

    For data N(mu, sd^2 I) and its exact denoiser the expectation is exactly 1 (lambda(sigma) times the posterior
    variance sd^2 sigma^2 / (sd^2 + sigma^2) is 1 at every sigma).
    """
    _check_common(denoiser, x0, P_mean, P_std)
    sigma_data = check_positive(sigma_data, "sigma_data")
    _, x, sigma = _noised(x0, P_mean, P_std, generator, seed)
    return _dsm_terms(denoiser(x, sigma), x0, sigma, sigma_data).mean()


@torch.no_grad()
def reverse_sde_chain(
    denoiser: Denoiser, x: torch.Tensor, sigma: torch.Tensor, sigma_end: torch.Tensor, n_steps: int, draws: Draws, slot: int
) -> torch.Tensor:
    """Euler-Maruyama on the reverse VE SDE dx = -2 sigma score dsigma + sqrt(2 sigma) dW from sigma down to sigma_end
    (per-sample [B] tensors) in `n_steps` equal steps in sigma, without gradient:
    x <- x + 2 (h / s) (D(x, s) - x) + sqrt(2 s h) z,  h = s - s_next."""
    for i in range(n_steps):
        s = sigma + (sigma_end - sigma) * (i / n_steps)
        s_next = sigma + (sigma_end - sigma) * ((i + 1) / n_steps)
        h = s - s_next
        z = draws.normal(x.shape[0], tuple(x.shape[1:]), slot + i, x.dtype, x.device)
        x = x + _view(2.0 * h / s, x) * (denoiser(x, s) - x) + _view((2.0 * s * h).sqrt(), x) * z
    return x


def _consistency_terms(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigma: torch.Tensor,
    denoised: torch.Tensor,
    draws: Draws,
    max_step: float,
    sigma_min: float,
    chain_steps: int,
) -> torch.Tensor:
    """Per-sample <D(x'_1, sigma') - D(x, sigma), D(x'_2, sigma') - D(x, sigma)> / numel, [B]."""
    u = torch.special.ndtr(draws.normal(x.shape[0], (), _SLOT_STEP_BACK, x.dtype, x.device))
    sigma_end = torch.minimum((sigma - max_step * u).clamp_min(sigma_min), sigma)
    start = x.detach()
    ends = [
        reverse_sde_chain(denoiser, start, sigma.detach(), sigma_end, chain_steps, draws, _SLOT_CHAINS + 16 * c)
        for c in range(2)
    ]
    d1 = denoiser(ends[0], sigma_end) - denoised
    d2 = denoiser(ends[1], sigma_end) - denoised
    return _per_sample_mean(d1 * d2)


def _check_cdm(max_step: float, sigma_min: float, chain_steps: int) -> tuple[float, float]:
    if check_positive_int(chain_steps, "chain_steps") > 16:  # the chains' draw slots hold 16 steps
        raise ValueError(f"chain_steps must be an int in [1, 16], got {chain_steps}")
    return check_number(max_step, "max_step"), check_positive(sigma_min, "sigma_min")


def consistency_loss(
    denoiser: Denoiser,
    x0: torch.Tensor,
    *,
    P_mean: float = -1.2,
    P_std: float = 1.2,
    max_step: float = 0.05,
    sigma_min: float = 0.002,
    chain_steps: int = 5,
    generator: torch.Generator | None = None,
    seed: Seeds = None,
) -> torch.Tensor:
    """The CDM consistency term L_cp (module docstring), a 0-d tensor; sigma' = max(sigma - U[0, max_step], sigma_min),
    each chain takes `chain_steps` Euler-Maruyama steps."""
    _check_common(denoiser, x0, P_mean, P_std)
    max_step, sigma_min = _check_cdm(max_step, sigma_min, chain_steps)
    draws, x, sigma = _noised(x0, P_mean, P_std, generator, seed)
    return _consistency_terms(denoiser, x, sigma, denoiser(x, sigma), draws, max_step, sigma_min, chain_steps).mean()


def cdm_loss(
    denoiser: Denoiser,
    x0: torch.Tensor,
    *,
    lambda_cp: float = 10.0,
    P_mean: float = -1.2,
    P_std: float = 1.2,
    sigma_data: float = 0.5,
    max_step: float = 0.05,
    sigma_min: float = 0.002,
    chain_steps: int = 5,
    generator: torch.Generator | None = None,
    seed: Seeds = None,
) -> torch.Tensor:
    """L_dsm + lambda_cp L_cp on one noised batch: D(x, sigma) is evaluated once and serves both terms, so a step costs
    3 network evaluations with gradient and 2 chain_steps without."""
    _check_common(denoiser, x0, P_mean, P_std)
    lambda_cp = check_number(lambda_cp, "lambda_cp")
    sigma_data = check_positive(sigma_data, "sigma_data")
    max_step, sigma_min = _check_cdm(max_step, sigma_min, chain_steps)
    draws, x, sigma = _noised(x0, P_mean, P_std, generator, seed)
    denoised = denoiser(x, sigma)
    dsm = _dsm_terms(denoised, x0, sigma, sigma_data)
    cp = _consistency_terms(denoiser, x, sigma, denoised, draws, max_step, sigma_min, chain_steps)
    return (dsm + lambda_cp * cp).mean()
