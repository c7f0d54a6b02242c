"""SRK in score form (ALGORITHMS.md section 3): the exponential-integrator analogue of Roessler's SRA1 on the reverse
OU process in VP coordinates y = alpha x, alpha = 1/sqrt(1 + sigma^2). Two evaluations per step.

dy = (y + 2 s) dr + sqrt(2) dB with s(y) = (alpha D - y)/(alpha^2 sigma^2); with h = log(alpha'/alpha) and the
coefficients of `fastdiff.srk_coefficients.score_form`:
    y~ = y + c h (y + 2 s(y)) + B xi2                      at alpha~ = alpha e^{ch}
    y' = e^h y + 2 w0 s(y) + 2 w1 s(y~) + xi1
done in EDM variables x = y/alpha with host scalars; the update takes its z2 part from x~ so z2 is drawn
once. Only the y-part of the linear drift is integrated exactly (s has a stiff linear part as sigma -> 0),
which makes this form unstable at large steps; `srk_dp` is the stable rewrite. `coupled=False` is the
independent-Gaussians ablation. The step to sigma' = 0 is the denoising step x' = D(x, sigma).
"""

from __future__ import annotations

import math

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, Solver, StepOutput
from fastdiff.solvers.srk_noise import step_draws
from fastdiff.srk_coefficients import score_form
from fastdiff.validation import check_flag


class SRKScore(Solver):
    name = "srk_score"
    stochastic = True

    def __init__(self, coupled: bool = True):
        self.coupled = check_flag(coupled, "coupled")

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = yield Evaluation(x, sigma)
        if sigma_next == 0.0:
            yield StepOutput(denoised, denoised, x, sigma)  # the denoising step x = D
            return
        k = score_form(0.5 * (math.log1p(sigma**2) - math.log1p(sigma_next**2)))
        alpha, alpha_next = 1.0 / math.sqrt(1.0 + sigma**2), 1.0 / math.sqrt(1.0 + sigma_next**2)
        ch = k.c * k.h
        alpha_stage = alpha * math.exp(ch)
        sigma_stage = math.sqrt(sigma**2 * math.exp(-2.0 * ch) + math.expm1(-2.0 * ch))
        z1, z2 = step_draws(ctx, i)
        # stage: y~ = (1 + ch) y + 2 ch (D - x)/(alpha sigma^2) + B xi2, divided by alpha~
        b_stage = 2.0 * ch / (alpha * sigma**2 * alpha_stage)
        a_stage = (1.0 + ch) * alpha / alpha_stage - b_stage
        stage_gain = k.B * k.noise.stage_scale / alpha_stage
        stage_x = solver_step(x, [denoised], a_stage, [b_stage], noise=[(stage_gain, z2)], backend=ctx.backend)
        stage_denoised = yield Evaluation(stage_x, sigma_stage)
        # update: x' = x + 2 w0 (D - x)/(alpha alpha' sigma^2) + 2 w1 (D~ - x~)/(alpha~ alpha' sigma~^2) + xi1/alpha'
        b0 = 2.0 * k.w0 / (alpha * alpha_next * sigma**2)
        b1 = 2.0 * k.w1 / (alpha_stage * alpha_next * sigma_stage**2)
        scale1, scale2 = k.noise.update_scales(self.coupled)
        kappa = scale2 / alpha_next / stage_gain
        x_next = solver_step(
            x,
            [denoised, stage_denoised, stage_x],
            1.0 - b0 - kappa * a_stage,
            [b0 - kappa * b_stage, b1, kappa - b1],
            noise=[(scale1 / alpha_next, z1)],
            backend=ctx.backend,
        )
        yield StepOutput(x_next, denoised, x, sigma)
