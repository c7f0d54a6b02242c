"""First-order exponential integrator of the reverse SDE (the SRK family with w1 = 0; DDPM's ancestral step in
data-prediction form). One evaluation per step.

With h = log(sigma/sigma'): x' = e^{-2h} x + (1 - e^{-2h}) D(x, sigma) + sigma' sqrt(1 - e^{-2h}) z, the exact solution
of dx = 2 (D - x) dlambda + sqrt(2) sigma dW when D is frozen over the step. The step to sigma' = 0 is the
denoising step x' = D(x, sigma).
"""

from __future__ import annotations

import math

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Solver, StepOutput


class ExpEM(Solver):
    name = "exp_em"
    stochastic = True

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = ctx.evaluate(x, sigma)
        if sigma_next == 0.0:
            return StepOutput(solver_step(x, [denoised], 0.0, [1.0], backend=ctx.backend), denoised, x, sigma)
        rise = -math.expm1(-2.0 * math.log(sigma / sigma_next))
        x_next = solver_step(x, [denoised], 1.0 - rise, [rise], noise=[(sigma_next * math.sqrt(rise), ctx.draw(i))],
                             backend=ctx.backend)
        return StepOutput(x_next, denoised, x, sigma)
