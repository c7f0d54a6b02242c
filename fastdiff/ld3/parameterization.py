"""LD3's grid parameterization (docs/ALGORITHMS.md section 7; Tong et al. 2024, arXiv 2405.15506).

With lambda = -log sigma, n levels and parameters xi (n, init ones):
    c = cumsum(softmax(xi)),   lambda_i = lambda_min + (c_i - c_0) / (c_{n-1} - c_0) (lambda_max - lambda_min),
monotone by construction, with the endpoints sigma_max and sigma_min fixed (set exactly, not through exp(log)).
xi init ones is the grid uniform in lambda ("logsnr"). In float64 that formula can still make two levels equal (a
gap underflows, or c_i - c_0 cancels when xi_0 dominates); wherever a gap falls below
delta = 2^-32 max(1, |lambda_min|, |lambda_max|), the grid is the floored form instead: gap fractions
q' = f + (1 - m f) softmax(xi_1..xi_{n-1}) (the same grid in exact arithmetic without the floor; xi_0 cancels), with
m = n - 1 gaps and f = delta / (lambda_max - lambda_min), so that every gap is at least delta. The switch moves a
grid by at most m delta, and the usual grids never reach it (they stay bit-identical to LD3's formula).

Decoupled model time, xi_c (n, init zeros): the network sees lambda_i + clip(xi_c_i, +-b_i), endpoints masked, with
b_i = min(w g_i, g_i / 2 - delta / 4) and g_i = min(lambda_i - lambda_{i-1}, lambda_{i+1} - lambda_i). The second term
only matters for w = 1/2, where two neighbours clipped towards each other would otherwise meet (and, rounded, tie or
cross): any two model times stay at least delta / 2 apart in lambda.

So any finite parameters give a grid and model times that are strictly decreasing in float64 (the gaps are at least
2^20 rounding units of lambda, and exp keeps that order), which is what `LearnedSchedule` requires.
"""

from __future__ import annotations

import math

import torch

GAP_RESOLUTION = 2.0**-32  # the smallest gap in lambda, in units of max(1, |lambda|): 2^20 float64 rounding units


class Discretization(torch.nn.Module):
    def __init__(
        self, levels: int, sigma_min: float, sigma_max: float, *, decoupled: bool, clip: float = 0.5, to_zero: bool = False
    ):
        super().__init__()
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 3:
            raise ValueError(f"a learnable grid needs at least one interior level (3 levels), got {levels!r}")
        if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not 0.0 < clip <= 0.5:
            raise ValueError(f"model_time_clip must be in (0, 0.5] (keeps model times ordered), got {clip!r}")
        ok = all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in (sigma_min, sigma_max))
        if not (ok and math.isfinite(sigma_min) and math.isfinite(sigma_max) and 0.0 < sigma_min < sigma_max):
            raise ValueError(f"need finite 0 < sigma_min < sigma_max, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
        self.sigma_min, self.sigma_max = float(sigma_min), float(sigma_max)
        self.lambda_min, self.lambda_max = -math.log(self.sigma_max), -math.log(self.sigma_min)
        span = self.lambda_max - self.lambda_min
        self.min_gap = GAP_RESOLUTION * max(1.0, abs(self.lambda_min), abs(self.lambda_max))
        self.gap_floor = self.min_gap / span  # f: the floor of each gap's fraction of the range
        if (levels - 1) * self.gap_floor > 0.5:
            raise ValueError(
                f"the sigma range sigma_min={sigma_min!r}..sigma_max={sigma_max!r} is too narrow for {levels} distinct "
                "levels in float64 (widen it or use fewer steps)"
            )
        self.clip, self.to_zero = float(clip), to_zero
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
        """LD3's formula, or the floored form where one of its gaps would be below delta (see the module docstring)."""
        span = self.lambda_max - self.lambda_min
        c = torch.cumsum(torch.softmax(self.xi, dim=0), dim=0)
        lam = self.lambda_min + (c[1:-1] - c[0]) / (c[-1] - c[0]) * span
        ends = lam.new_tensor([self.lambda_min]), lam.new_tensor([self.lambda_max])
        if bool(torch.cat([ends[0], lam.detach(), ends[1]]).diff().min() >= self.min_gap):  # False for NaN too
            return lam
        m = self.xi.numel() - 1
        q = self.gap_floor + (1.0 - m * self.gap_floor) * torch.softmax(self.xi[1:], dim=0)
        return self.lambda_min + torch.cumsum(q, dim=0)[:-1] * span

    def offset_bound(self, lam: torch.Tensor) -> torch.Tensor:
        """b_i = min(w g_i, g_i / 2 - delta / 4) for every interior level, g_i its smaller neighbouring gap (no
        gradient)."""
        full = torch.cat([lam.new_tensor([self.lambda_min]), lam.detach(), lam.new_tensor([self.lambda_max])])
        gaps = full.diff()
        near = torch.minimum(gaps[:-1], gaps[1:])
        return torch.minimum(self.clip * near, near / 2 - self.min_gap / 4)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sigmas, model_sigmas), float64, strictly decreasing from sigma_max to sigma_min (then 0 with `to_zero`)."""
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
