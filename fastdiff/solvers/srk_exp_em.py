"""First-order exponential integrator of the VP reverse SDE: the score-form SRK (`srk_score`) with w1 = 0, the
"first-order exp. integrator" baseline of docs/ALGORITHMS.md section 11. One evaluation per step.

In y = alpha x, alpha = 1/sqrt(1 + sigma^2), h = log(alpha'/alpha): y' = e^h y + 2 (e^h - 1) s(y) + sqrt(e^{2h} - 1) z,
s(y) = (alpha D - y)/(alpha^2 sigma^2); in EDM variables x' = x + b (D - x) + sqrt(e^{2h} - 1)/alpha' z with
b = 2 expm1(h)/(alpha alpha' sigma^2). (The same step in data-prediction form is exactly `euler_ancestral`
with eta = 1, so it is not repeated here.) The step has no finite limit as sigma -> inf (b -> 2, and the noise scale
sqrt(e^{2h} - 1)/alpha' grows like sigma); the step from infinity is the exact reverse-SDE limit x' = D + sigma' z,
(kept, fresh) = (0, 1).
"""

from __future__ import annotations

import math

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, Solver, StepOutput
from fastdiff.srk_coefficients import vp_step


class ExpEM(Solver):
    name = "exp_em"
    order = 1
    evaluations_per_step = 1
    stochastic = True

    def from_infinity(self) -> tuple[float, float]:
        return 0.0, 1.0

    def step(self, ctx, i, x):
        sigma = ctx.sigmas[i]
        denoised = yield Evaluation(x, sigma)
        vp = vp_step(sigma, ctx.sigmas[i + 1])
        b = 2.0 * math.expm1(vp.h) / (vp.alpha * vp.alpha_next * sigma**2)
        noise = [(math.sqrt(math.expm1(2.0 * vp.h)) / vp.alpha_next, ctx.draw(i))]
        x_next = solver_step(x, [denoised], 1.0 - b, [b], noise=noise, backend=ctx.backend)
        yield StepOutput(x_next, denoised, x, sigma)
