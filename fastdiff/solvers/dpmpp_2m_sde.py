"""DPM-Solver++(2M) SDE (Lu et al. 2022, arXiv 2211.01095; k-diffusion's `sample_dpmpp_2m_sde`, diffusers'
`sde-dpmsolver++`).

With h = log(sigma/sigma') and g = -expm1(-(1 + eta) h):
x' = (sigma'/sigma) e^{-eta h} x + g D_i + corr (D_i - D_{i-1}) + s_noise sigma' sqrt(-expm1(-2 eta h)) z,
corr = g / (2r) ('midpoint') or (1 - g/((1 + eta) h)) / r ('heun'), r = h_{i-1}/h, and corr = 0 on the first step.
eta = 0 is the deterministic DPM-Solver++(2M) ODE step in the same form. One evaluation per step.
From sigma = inf (`EtaNoiseSolver.from_infinity`) the history starts at step 1: corr ~ h/h_{i-1} is 0 for a previous
point at lambda = -inf, so step 1's first-step form is the exact limit.
"""

from __future__ import annotations

import math

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, StepOutput
from fastdiff.solvers.eta_noise import EtaNoiseSolver

SOLVER_TYPES = ("midpoint", "heun")


class DPMpp2MSDE(EtaNoiseSolver):
    name = "dpmpp_2m_sde"
    order = 2
    evaluations_per_step = 1

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0, solver_type: str = "midpoint"):
        if solver_type not in SOLVER_TYPES:
            raise ValueError(f"solver_type must be one of {SOLVER_TYPES}, got {solver_type!r}")
        super().__init__(eta, s_noise)
        self.solver_type = solver_type
        self.previous = None  # (D, h) of the previous step

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = yield Evaluation(x, sigma)
        h = math.log(sigma / sigma_next)
        eta_h = self.eta * h
        g = -math.expm1(-h - eta_h)
        ks, bs = [denoised], [g]
        if self.previous is not None:
            previous_denoised, h_last = self.previous
            inv_r = h / h_last
            corr = (0.5 * g if self.solver_type == "midpoint" else 1.0 - g / (h + eta_h)) * inv_r
            ks, bs = [denoised, previous_denoised], [g + corr, -corr]
        noise = self.sde_noise(ctx, i, h)
        x_next = solver_step(x, ks, sigma_next / sigma * math.exp(-eta_h), bs, noise=noise, backend=ctx.backend)
        self.previous = (denoised, h)
        yield StepOutput(x_next, denoised, x, sigma)
