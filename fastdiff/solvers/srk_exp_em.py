"""First-order exponential integrator of the VP reverse SDE: the score-form SRK (`srk_score`) with w1 = 0, the
"first-order exp. integrator" baseline of ALGORITHMS.md section 11. One evaluation per step.

In y = alpha x, alpha = 1/sqrt(1 + sigma^2), h = log(alpha'/alpha): y' = e^h y + 2 (e^h - 1) s(y) + sqrt(e^{2h} - 1) z,
s(y) = (alpha D - y)/(alpha^2 sigma^2); in EDM variables x' = x + b (D - x) + sqrt(e^{2h} - 1)/alpha' z with
b = 2 expm1(h)/(alpha alpha' sigma^2). (The same step in data-prediction form is exactly `euler_ancestral`
with eta = 1, so it is not repeated here.) The step to sigma' = 0 is the denoising step x' = D(x, sigma).
"""

from __future__ import annotations

import math

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, Solver, StepOutput


class ExpEM(Solver):
    name = "exp_em"
    stochastic = True

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = yield Evaluation(x, sigma)
        if sigma_next == 0.0:
            yield StepOutput(denoised, denoised, x, sigma)  # the denoising step x = D
            return
        h = 0.5 * (math.log1p(sigma**2) - math.log1p(sigma_next**2))
        alpha, alpha_next = 1.0 / math.sqrt(1.0 + sigma**2), 1.0 / math.sqrt(1.0 + sigma_next**2)
        b = 2.0 * math.expm1(h) / (alpha * alpha_next * sigma**2)
        noise = [(math.sqrt(math.expm1(2.0 * h)) / alpha_next, ctx.draw(i))]
        yield StepOutput(solver_step(x, [denoised], 1.0 - b, [b], noise=noise, backend=ctx.backend), denoised, x, sigma)
