"""SRK in score form (docs/ALGORITHMS.md section 3): the exponential-integrator analogue of Roessler's SRA1 on the reverse
OU process in VP coordinates y = alpha x, alpha = 1/sqrt(1 + sigma^2). Two evaluations per step.

dy = (y + 2 s) dr + sqrt(2) dB with s(y) = (alpha D - y)/(alpha^2 sigma^2); with h = log(alpha'/alpha) and the
coefficients of `fastdiff.srk_coefficients.score_form`:
    y~ = y + c h (y + 2 s(y)) + B xi2                      at alpha~ = alpha e^{ch}
    y' = e^h y + 2 w0 s(y) + 2 w1 s(y~) + xi1
done in EDM variables x = y/alpha with host scalars, where s(y) = (D - x)/(alpha sigma^2) and e^h y/alpha' = x:
    x~ = a~ x + b~ D + B xi2/alpha~,  a~ = (1 + ch) alpha/alpha~ - b~,  b~ = 2 ch/(alpha sigma^2 alpha~)
    x' = x + b0 (D - x) + b1 (D~ - x~) + xi1/alpha',  b0 = 2 w0/(alpha alpha' sigma^2),  b1 = 2 w1/(alpha~ alpha' sigma~^2)
The update takes its z2 part from x~ (kappa (x~ - a~ x - b~ D)), so z2 is drawn once. Only the y-part of the linear
drift is integrated exactly (s has a stiff linear part as sigma -> 0), which makes this form unstable at large steps;
`srk_dp` is the stable rewrite. `coupled=False` is the independent-Gaussians ablation.
The step has no finite limit as sigma -> inf (b0 and b1 tend to constants, so x's weight times sigma/sigma' grows like
sigma); the step from infinity is the exact reverse-SDE limit x' = D + sigma' z (`CoupledNoiseSolver.from_infinity`).
"""

from __future__ import annotations

import math

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, StepOutput
from fastdiff.solvers.srk_noise import CoupledNoiseSolver, step_draws
from fastdiff.srk_coefficients import score_form, vp_step


class SRKScore(CoupledNoiseSolver):
    name = "srk_score"
    evaluations_per_step = 2

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        D = yield Evaluation(x, sigma)
        vp = vp_step(sigma, sigma_next)
        alpha, alpha_next = vp.alpha, vp.alpha_next
        k = score_form(vp.h)
        ch = k.c * k.h
        alpha_stage = alpha * math.exp(ch)  # alpha~ = alpha e^{ch}
        sigma_stage = math.sqrt(sigma**2 * math.exp(-2.0 * ch) + math.expm1(-2.0 * ch))  # 1 + sigma~^2 = 1/alpha~^2
        z1, z2 = step_draws(ctx, i, math.sqrt(sigma * sigma_next))  # correlated Gaussians, not a split in time
        b_stage = 2.0 * ch / (alpha * sigma**2 * alpha_stage)
        a_stage = (1.0 + ch) * alpha / alpha_stage - b_stage
        B_xi2 = k.B * k.noise.stage_scale / alpha_stage  # B xi2/alpha~ = B_xi2 z2
        # x~ = a~ x + b~ D + B xi2/alpha~
        x_stage = solver_step(x, [D], a_stage, [b_stage], noise=[(B_xi2, z2)], backend=ctx.backend)
        D_stage = yield Evaluation(x_stage, sigma_stage)
        b0 = 2.0 * k.w0 / (alpha * alpha_next * sigma**2)
        b1 = 2.0 * k.w1 / (alpha_stage * alpha_next * sigma_stage**2)
        xi1_z1, xi1_z2 = k.noise.update_scales(self.coupled)  # xi1 = xi1_z1 z1 + xi1_z2 z2
        kappa = xi1_z2 / alpha_next / B_xi2  # xi1's z2 part over alpha', read from x~
        # x' = x + b0 (D - x) + b1 (D~ - x~) + kappa (x~ - a~ x - b~ D) + xi1_z1 z1/alpha'
        x_next = solver_step(
            x,
            [D, D_stage, x_stage],
            1.0 - b0 - kappa * a_stage,
            [b0 - kappa * b_stage, b1, kappa - b1],
            noise=[(xi1_z1 / alpha_next, z1)],
            backend=ctx.backend,
        )
        yield StepOutput(x_next, D, x, sigma)
