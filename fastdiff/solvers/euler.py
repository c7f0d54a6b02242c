"""Euler (= DDIM) on the probability-flow ODE, with EDM's optional churn (Karras et al. 2022, Alg. 2).

x' = x + (sigma' - sigma_hat) (x - D(x, sigma_hat)) / sigma_hat, i.e. a x + b D with
a = sigma'/sigma_hat, b = 1 - sigma'/sigma_hat. With churn, x is first noised from sigma to
sigma_hat = (1 + gamma) sigma.
"""

from __future__ import annotations

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, StepOutput
from fastdiff.solvers.churn import ChurnedSolver


class Euler(ChurnedSolver):
    name = "euler"
    order = 1
    learnable_schedule = True

    def step(self, ctx, i, x):
        x, sigma_hat = self.churn.apply(ctx, i, x)
        denoised = yield Evaluation(x, sigma_hat)
        ratio = ctx.sigmas[i + 1] / sigma_hat
        x_next = solver_step(x, [denoised], ratio, [1.0 - ratio], backend=ctx.backend)
        yield StepOutput(x_next, denoised, x, sigma_hat)
