"""SRK in data-prediction form (ALGORITHMS.md section 11): the linear part of dx = 2 (D - x) dlambda + sqrt(2) sigma dW
integrated exactly, one stage, two coupled Gaussians. Two evaluations per step.

With h = log(sigma/sigma') and the coefficients of `fastdiff.srk_coefficients.data_form`:
    x~ = e^{-2ch} x + (1 - e^{-2ch}) D(x, sigma) + B xi2                 at sigma~ = sigma e^{-ch}
    x' = e^{-2h} x + 2 (w0 D(x, sigma) + w1 D(x~, sigma~)) + xi1
xi2 = sqrt(V2) z2 and xi1 = (C12/sqrt(V2)) z2 + sqrt(V1 - C12^2/V2) z1; the update takes its z2 part from x~,
x' = ... + kappa (x~ - e^{-2ch} x - (1 - e^{-2ch}) D), kappa = C12/(B V2), so z2 is drawn once.
`coupled=False` draws xi1 independent of xi2 (same variances): the ablation that loses the order.
The step to sigma' = 0 is the denoising step x' = D(x, sigma).
"""

from __future__ import annotations

import math

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, Solver, StepOutput
from fastdiff.solvers.srk_noise import step_draws
from fastdiff.srk_coefficients import data_form
from fastdiff.validation import check_flag


class SRKData(Solver):
    name = "srk_dp"
    stochastic = True

    def __init__(self, coupled: bool = True):
        self.coupled = check_flag(coupled, "coupled")

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = yield Evaluation(x, sigma)
        if sigma_next == 0.0:
            yield StepOutput(denoised, denoised, x, sigma)  # the denoising step x = D
            return
        k = data_form(math.log(sigma / sigma_next))
        z1, z2 = step_draws(ctx, i)
        decay, rise = math.exp(-2.0 * k.c * k.h), -math.expm1(-2.0 * k.c * k.h)
        stage_gain = k.B * k.noise.stage_scale
        stage_x = solver_step(x, [denoised], decay, [rise], noise=[(stage_gain * sigma_next, z2)], backend=ctx.backend)
        stage_denoised = yield Evaluation(stage_x, sigma * math.exp(-k.c * k.h))
        scale1, scale2 = k.noise.update_scales(self.coupled)
        kappa = scale2 / stage_gain
        x_next = solver_step(
            x,
            [denoised, stage_denoised, stage_x],
            math.exp(-2.0 * k.h) - kappa * decay,
            [2.0 * k.w0 - kappa * rise, 2.0 * k.w1, kappa],
            noise=[(scale1 * sigma_next, z1)],
            backend=ctx.backend,
        )
        yield StepOutput(x_next, denoised, x, sigma)
