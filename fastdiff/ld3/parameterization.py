"""LD3's grid parameterization (ALGORITHMS.md section 7; Tong et al. 2024, arXiv 2405.15506).

With lambda = -log sigma, n levels and parameters xi (n, init ones):
    c = cumsum(softmax(xi)),   lambda_i = lambda_min + (c_i - c_0) / (c_{n-1} - c_0) (lambda_max - lambda_min),
monotone by construction, with the endpoints sigma_max and sigma_min fixed (set exactly, not through exp(log)).
xi init ones is the grid uniform in lambda ("logsnr"). Decoupled model time, xi_c (n, init zeros): the network
sees lambda_i + clip(xi_c_i, +-w g_i), g_i = min(lambda_i - lambda_{i-1}, lambda_{i+1} - lambda_i), endpoints
masked; with w <= 1/2 the model times stay strictly decreasing in sigma.
"""

from __future__ import annotations

import math

import torch


class Discretization(torch.nn.Module):
    def __init__(
        self, levels: int, sigma_min: float, sigma_max: float, *, decoupled: bool, clip: float = 0.5, to_zero: bool = False
    ):
        super().__init__()
        if levels < 3:
            raise ValueError(f"a learnable grid needs at least one interior level (3 levels), got {levels}")
        if not 0.0 < clip <= 0.5:
            raise ValueError(f"model_time_clip must be in (0, 0.5] (keeps model times ordered), got {clip}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.lambda_min, self.lambda_max = -math.log(sigma_max), -math.log(sigma_min)
        self.clip, self.to_zero = clip, to_zero
        self.xi = torch.nn.Parameter(torch.ones(levels, dtype=torch.float64))
        self.xi_c = torch.nn.Parameter(torch.zeros(levels, dtype=torch.float64)) if decoupled else None

    @torch.no_grad()
    def start_from(self, sigmas: list[float]) -> None:
        """Set xi so that the grid equals `sigmas` (same levels and endpoints; a trailing 0 is ignored):
        softmax(xi)_j proportional to the lambda gaps for j >= 1, xi_0 (which cancels) their mean log."""
        positive = torch.tensor([s for s in sigmas if s > 0], dtype=torch.float64)
        if positive.numel() != self.xi.numel():
            raise ValueError(f"start grid must have {self.xi.numel()} positive levels, got {positive.numel()}")
        log_gaps = (-positive.log()).diff().log()
        self.xi.copy_(torch.cat([log_gaps.mean().reshape(1), log_gaps]).to(self.xi))

    def interior_lambdas(self) -> torch.Tensor:
        c = torch.cumsum(torch.softmax(self.xi, dim=0), dim=0)
        frac = (c[1:-1] - c[0]) / (c[-1] - c[0])
        return self.lambda_min + frac * (self.lambda_max - self.lambda_min)

    def offset_bound(self, lam: torch.Tensor) -> torch.Tensor:
        """w times the smaller neighbouring gap of every interior level (no gradient)."""
        full = torch.cat([lam.new_tensor([self.lambda_min]), lam.detach(), lam.new_tensor([self.lambda_max])])
        gaps = full.diff()
        return self.clip * torch.minimum(gaps[:-1], gaps[1:])

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigmas, model_sigmas), float64, decreasing from sigma_max to sigma_min (then 0 with `to_zero`)."""
        lam = self.interior_lambdas()
        ends = lam.new_tensor([self.sigma_max]), lam.new_tensor([self.sigma_min])
        tail = [lam.new_zeros(1)] if self.to_zero else []
        sigmas = torch.cat([ends[0], torch.exp(-lam), ends[1], *tail])
        if self.xi_c is None:
            return sigmas, sigmas
        bound = self.offset_bound(lam)
        model_lam = lam + torch.clamp(self.xi_c[1:-1], -bound, bound)
        return sigmas, torch.cat([ends[0], torch.exp(-model_lam), ends[1], *tail])

    @torch.no_grad()
    def project_(self) -> None:
        """Keep xi_c inside its clip range, so that a saturated offset still gets gradients back inwards."""
        if self.xi_c is not None:
            bound = self.offset_bound(self.interior_lambdas())
            self.xi_c[1:-1].clamp_(-bound, bound)
