"""Euler-Maruyama on the reverse SDE in variance time u = sigma^2 (Song et al. 2021, arXiv 2011.13456; docs/ALGORITHMS.md 3).

With Delta = sigma^2 - sigma'^2 and score s = (D - x)/sigma^2: x' = x + Delta s + s_noise sqrt(Delta) z, i.e.
x' = (sigma'/sigma)^2 x + (1 - (sigma'/sigma)^2) D + s_noise sqrt(Delta) z. One evaluation per step.
This step has no finite limit as sigma -> inf (the noise variance Delta is infinite there). The step from infinity is
the exact limit of the SDE's own transition, the Ornstein-Uhlenbeck (Brownian-bridge) law x' = D + (sigma'/sigma)^2
(x - D) + sigma' sqrt(1 - (sigma'/sigma)^2) z, with the noise scaled by s_noise: x' = D + s_noise sigma' z, i.e.
(kept, fresh) = (0, s_noise).
"""

from __future__ import annotations

import math

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, Solver, StepOutput
from fastdiff.validation import check_number


class EulerMaruyama(Solver):
    name = "euler_maruyama"
    order = 1
    evaluations_per_step = 1

    def __init__(self, s_noise: float = 1.0):
        self.s_noise = check_number(s_noise, "s_noise")
        self.stochastic = self.s_noise > 0.0

    def from_infinity(self) -> tuple[float, float]:
        """The exact Ornstein-Uhlenbeck limit (0, s_noise); the Euler-Maruyama step itself has none (module docstring)."""
        return 0.0, self.s_noise

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = yield Evaluation(x, sigma)
        ratio = (sigma_next / sigma) ** 2
        delta = (sigma - sigma_next) * (sigma + sigma_next)
        noise = [(self.s_noise * math.sqrt(delta), ctx.draw(i))] if self.stochastic else []
        x_next = solver_step(x, [denoised], ratio, [1.0 - ratio], noise=noise, backend=ctx.backend)
        yield StepOutput(x_next, denoised, x, sigma)
