"""Euler ancestral sampling (k-diffusion's `sample_euler_ancestral`; DDPM's ancestral step, Ho et al. 2020,
in the ODE form of Karras et al. 2022).

The step sigma -> sigma' is split into an Euler step to sigma_down and fresh noise of scale sigma_up:
sigma_up = min(sigma', eta sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2)), sigma_down = sqrt(sigma'^2 - sigma_up^2),
x' = (sigma_down/sigma) x + (1 - sigma_down/sigma) D + s_noise sigma_up z. eta = 0 is Euler (deterministic).
As sigma -> inf, sigma_up -> min(eta, 1) sigma' and sigma_down -> sqrt(1 - min(eta, 1)^2) sigma': the step from
infinity keeps sqrt(1 - min(eta, 1)^2) of the unit noise n and adds s_noise min(eta, 1) fresh.
"""

from __future__ import annotations

import math

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, StepOutput
from fastdiff.solvers.eta_noise import EtaNoiseSolver


def ancestral_step(sigma: float, sigma_next: float, eta: float) -> tuple[float, float]:
    """(sigma_down, sigma_up) with sigma_down^2 + sigma_up^2 = sigma_next^2; eta = 1 is DDPM's posterior variance."""
    if eta == 0.0:
        return sigma_next, 0.0
    sigma_up = min(sigma_next, eta * math.sqrt(sigma_next**2 * (sigma**2 - sigma_next**2) / sigma**2))
    return math.sqrt(sigma_next**2 - sigma_up**2), sigma_up


class EulerAncestral(EtaNoiseSolver):
    name = "euler_ancestral"
    order = 1
    evaluations_per_step = 1

    def from_infinity(self) -> tuple[float, float]:
        share = min(self.eta, 1.0)  # sigma_up / sigma' as sigma -> inf
        return math.sqrt(1.0 - share**2), self.s_noise * share

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = yield Evaluation(x, sigma)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, self.eta)
        ratio = sigma_down / sigma
        noise = [(self.s_noise * sigma_up, ctx.draw(i))] if self.stochastic else []
        x_next = solver_step(x, [denoised], ratio, [1.0 - ratio], noise=noise, backend=ctx.backend)
        yield StepOutput(x_next, denoised, x, sigma)
