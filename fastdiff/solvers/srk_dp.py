"""SRK in data-prediction form (docs/ALGORITHMS.md section 11): the linear part of dx = 2 (D - x) dlambda + sqrt(2) sigma dW
integrated exactly, one stage, two coupled Gaussians. Two evaluations per step.

With h = log(sigma/sigma') and the coefficients of `fastdiff.srk_coefficients.data_form`:
    x~ = e^{-2ch} x + (1 - e^{-2ch}) D(x, sigma) + B xi2                 at sigma~ = sigma e^{-ch}
    x' = e^{-2h} x + 2 (w0 D(x, sigma) + w1 D(x~, sigma~)) + xi1
xi2 = sqrt(V2) z2 and xi1 = (C12/sqrt(V2)) z2 + sqrt(V1 - C12^2/V2) z1; the update takes its z2 part from x~,
x' = ... + kappa (x~ - e^{-2ch} x - (1 - e^{-2ch}) D), kappa = C12/(B V2), so z2 is drawn once.
`coupled=False` draws xi1 independent of xi2 (same variances): the ablation that loses the order.
"""

from __future__ import annotations

import math

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, StepOutput
from fastdiff.solvers.srk_noise import CoupledNoiseSolver, step_draws
from fastdiff.srk_coefficients import data_form, ou_decay


class SRKData(CoupledNoiseSolver):
    name = "srk_dp"
    evaluations_per_step = 2

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        D = yield Evaluation(x, sigma)
        k = data_form(math.log(sigma / sigma_next))
        z1, z2 = step_draws(ctx, i, math.sqrt(sigma * sigma_next))  # correlated Gaussians, not a split in time
        stage_decay, stage_rise = ou_decay(k.c * k.h)  # e^{-2ch}, 1 - e^{-2ch}
        B_xi2 = k.B * k.noise.stage_scale  # B xi2 = B_xi2 sigma' z2 (variances in units of sigma'^2)
        xi1_z1, xi1_z2 = k.noise.update_scales(self.coupled)  # xi1 = (xi1_z1 z1 + xi1_z2 z2) sigma'
        kappa = xi1_z2 / B_xi2  # xi1's z2 part, read from x~
        # x~ = e^{-2ch} x + (1 - e^{-2ch}) D + B xi2
        x_stage = solver_step(x, [D], stage_decay, [stage_rise], noise=[(B_xi2 * sigma_next, z2)], backend=ctx.backend)
        D_stage = yield Evaluation(x_stage, sigma * math.exp(-k.c * k.h))
        # x' = e^{-2h} x + 2 w0 D + 2 w1 D~ + kappa (x~ - e^{-2ch} x - (1 - e^{-2ch}) D) + xi1_z1 sigma' z1
        x_next = solver_step(
            x,
            [D, D_stage, x_stage],
            math.exp(-2.0 * k.h) - kappa * stage_decay,
            [2.0 * k.w0 - kappa * stage_rise, 2.0 * k.w1, kappa],
            noise=[(xi1_z1 * sigma_next, z1)],
            backend=ctx.backend,
        )
        yield StepOutput(x_next, D, x, sigma)
