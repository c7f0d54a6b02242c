"""DPM-Solver++(3M) SDE (Lu et al. 2022, arXiv 2211.01095; k-diffusion's `sample_dpmpp_3m_sde`).

With h = log(sigma/sigma'), h_eta = (1 + eta) h, phi_1 = 1 - e^{-h_eta}, phi_2 = 1 - phi_1/h_eta, phi_3 = phi_2/h_eta - 1/2:
x' = e^{-h_eta} x + phi_1 D_i + phi_2 d1 - phi_3 d2 + s_noise sigma' sqrt(-expm1(-2 eta h)) z, where
d1, d2 are the first and second divided differences of D over the last three steps (r0 = h_{i-1}/h,
r1 = h_{i-2}/h): d1_0 = (D_i - D_{i-1})/r0, d1_1 = (D_{i-1} - D_{i-2})/r1, d1 = d1_0 + (d1_0 - d1_1) r0/(r0 + r1),
d2 = (d1_0 - d1_1)/(r0 + r1). Warm-up: the first step uses neither (d1 = d2 = 0), the second d1 = d1_0, d2 = 0.
In D_i, D_{i-1}, D_{i-2}: phi_2 d1 - phi_3 d2 = (phi_2 + w) d1_0 - w d1_1 with w = (phi_2 r0 - phi_3)/(r0 + r1).
One evaluation per step. The first step's first-order local error keeps the global order at 2 (as for iPNDM).
From sigma = inf (`EtaNoiseSolver.from_infinity`) the history starts at step 1: a previous point at lambda = -inf has
1/r0 = 0 (or r1 = inf: w = 0), so the warm-up forms of steps 1 and 2 are the exact limits there.
"""

from __future__ import annotations

import math

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, StepOutput
from fastdiff.solvers.eta_noise import EtaNoiseSolver


class DPMpp3MSDE(EtaNoiseSolver):
    name = "dpmpp_3m_sde"
    order = 2
    evaluations_per_step = 1

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0):
        super().__init__(eta, s_noise)
        self.history: list[tuple] = []  # (D, h) of the previous two steps, newest first

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        D_i = yield Evaluation(x, sigma)
        h = math.log(sigma / sigma_next)
        h_eta = (1.0 + self.eta) * h
        phi_1 = -math.expm1(-h_eta)
        phi_2 = 1.0 - phi_1 / h_eta
        if not self.history:  # x' = e^{-h_eta} x + phi_1 D_i
            ks, bs = [D_i], [phi_1]
        elif len(self.history) == 1:  # ... + phi_2 d1_0, phi_2 / r0 = phi_2 h / h_{i-1}
            [(D_1, h_1)] = self.history
            b = phi_2 * h / h_1
            ks, bs = [D_i, D_1], [phi_1 + b, -b]
        else:  # ... + (phi_2 + w) d1_0 - w d1_1
            (D_1, h_1), (D_2, h_2) = self.history
            r0, r1 = h_1 / h, h_2 / h
            phi_3 = phi_2 / h_eta - 0.5
            w = (phi_2 * r0 - phi_3) / (r0 + r1)
            w_0 = phi_2 + w  # the weight of d1_0 = (D_i - D_{i-1})/r0; d1_1 = (D_{i-1} - D_{i-2})/r1 has -w
            ks, bs = [D_i, D_1, D_2], [phi_1 + w_0 / r0, -w_0 / r0 - w / r1, w / r1]
        x_next = solver_step(x, ks, math.exp(-h_eta), bs, noise=self.sde_noise(ctx, i, h), backend=ctx.backend)
        self.history = [(D_i, h), *self.history[:1]]
        yield StepOutput(x_next, D_i, x, sigma)
