"""DPM-Solver++(3M) SDE (Lu et al. 2022, arXiv 2211.01095; k-diffusion's `sample_dpmpp_3m_sde`).

With h = log(sigma/sigma'), h_eta = (1 + eta) h, phi_2 = 1 - (1 - e^{-h_eta})/h_eta, phi_3 = phi_2/h_eta - 1/2:
x' = e^{-h_eta} x + (1 - e^{-h_eta}) D_i + phi_2 d1 - phi_3 d2 + s_noise sigma' sqrt(-expm1(-2 eta h)) z, where
d1, d2 are the first and second divided differences of D over the last three steps (r0 = h_{i-1}/h,
r1 = h_{i-2}/h): d1_0 = (D_i - D_{i-1})/r0, d1_1 = (D_{i-1} - D_{i-2})/r1, d1 = d1_0 + (d1_0 - d1_1) r0/(r0 + r1),
d2 = (d1_0 - d1_1)/(r0 + r1). Warm-up: the first step uses neither (d1 = d2 = 0), the second d1 = d1_0, d2 = 0.
The step to sigma' = 0 is the denoising step x' = D_i and draws no noise. One evaluation per step.
"""

from __future__ import annotations

import math

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, Solver, StepOutput
from fastdiff.validation import check_number


class DPMpp3MSDE(Solver):
    name = "dpmpp_3m_sde"

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0):
        self.eta = check_number(eta, "eta")
        self.s_noise = check_number(s_noise, "s_noise")
        self.stochastic = self.eta > 0.0 and self.s_noise > 0.0
        self.history: list[tuple] = []  # (D, h) of the previous two steps, newest first

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = yield Evaluation(x, sigma)
        if sigma_next == 0.0:
            x_next = denoised  # the step to sigma = 0 is the denoising step x = D
            yield StepOutput(x_next, denoised, x, sigma)
            return
        h = math.log(sigma / sigma_next)
        h_eta = (1.0 + self.eta) * h
        phi_1 = -math.expm1(-h_eta)
        phi_2 = 1.0 - phi_1 / h_eta
        ks, bs = [denoised], [phi_1]
        if len(self.history) == 1:
            [(d_1, h_1)] = self.history
            b = phi_2 * h / h_1
            ks, bs = [denoised, d_1], [phi_1 + b, -b]
        elif len(self.history) == 2:
            (d_1, h_1), (d_2, h_2) = self.history
            r0, r1 = h_1 / h, h_2 / h
            phi_3 = phi_2 / h_eta - 0.5
            w = (phi_2 * r0 - phi_3) / (r0 + r1)  # x' gains phi_2 d1_0 + w (d1_0 - d1_1)
            ks = [denoised, d_1, d_2]
            bs = [phi_1 + (phi_2 + w) / r0, -(phi_2 + w) / r0 - w / r1, w / r1]
        noise_scale = self.s_noise * sigma_next * math.sqrt(-math.expm1(-2.0 * self.eta * h))
        noise = [(noise_scale, ctx.draw(i))] if self.stochastic else []
        x_next = solver_step(x, ks, math.exp(-h_eta), bs, noise=noise, backend=ctx.backend)
        self.history = [(denoised, h), *self.history[:1]]
        yield StepOutput(x_next, denoised, x, sigma)
