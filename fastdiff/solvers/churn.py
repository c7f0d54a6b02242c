"""EDM's stochastic churn (Karras et al. 2022, Alg. 2): raise sigma to sigma_hat = (1 + gamma) sigma
by adding noise of variance sigma_hat^2 - sigma^2, gamma = min(s_churn / N, sqrt(2) - 1) inside
[s_tmin, s_tmax]. Shared by the Euler and Heun step rules, as their step's start point (`Solver.start`), so the
loop's denoising step to sigma' = 0 starts from the churned point too. At sigma = inf churn does nothing: pure noise
noised further is pure noise in law (with s_noise = 1 the churned step's limit there, (1/(1 + gamma)) n +
sqrt(1 - 1/(1 + gamma)^2) z, has the law of the unit noise n), so the loop's step from infinity takes none."""

from __future__ import annotations

import math

import torch

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Solver, StepContext
from fastdiff.validation import check_number


class Churn:
    def __init__(self, s_churn: float, s_tmin: float, s_tmax: float, s_noise: float):
        self.s_churn = check_number(s_churn, "s_churn")
        self.s_tmin = check_number(s_tmin, "s_tmin")
        self.s_tmax = check_number(s_tmax, "s_tmax", allow_inf=True)
        self.s_noise = check_number(s_noise, "s_noise")

    @property
    def active(self) -> bool:
        return self.s_churn > 0.0

    def apply(self, ctx: StepContext, i: int, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """Return (churned x, sigma_hat); x unchanged and sigma_hat = sigma when gamma = 0."""
        sigma = ctx.sigmas[i]
        steps = len(ctx.sigmas) - 1
        gamma = min(self.s_churn / steps, math.sqrt(2.0) - 1.0) if self.s_tmin <= sigma <= self.s_tmax else 0.0
        if gamma <= 0.0 or math.isinf(sigma):
            return x, sigma
        sigma_hat = sigma * (gamma + 1.0)
        scale = self.s_noise * math.sqrt(sigma_hat**2 - sigma**2)
        return solver_step(x, [], 1.0, [], noise=[(scale, ctx.draw(i, stage=0))], backend=ctx.backend), sigma_hat


class ChurnedSolver(Solver):
    """Base of the step rules that take EDM's churn options (Euler, Heun). Churn keeps their order (weak order with
    churn, as tests/test_srk.py measures)."""

    def __init__(self, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = float("inf"), s_noise: float = 1.0):
        self.churn = Churn(s_churn, s_tmin, s_tmax, s_noise)
        self.stochastic = self.churn.active

    def start(self, ctx: StepContext, i: int, x: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(x^, sigma^) = x churned from sigma to sigma_hat (x itself where gamma = 0)."""
        return self.churn.apply(ctx, i, x)
