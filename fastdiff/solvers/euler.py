"""Euler (= DDIM) on the probability-flow ODE, with EDM's optional churn (Karras et al. 2022, Alg. 2).

x' = x + (sigma' - sigma_hat) (x - D(x, sigma_hat)) / sigma_hat, i.e. a x + b D with
a = sigma'/sigma_hat, b = 1 - sigma'/sigma_hat. With churn, x is first noised from sigma to
sigma_hat = (1 + gamma) sigma (`ChurnedSolver.start`). As sigma -> inf, x = sigma n: x' -> D + sigma' n, the step
from infinity with (kept, fresh) = (1, 0) (DDIM's first step from t = 1).
"""

from __future__ import annotations

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, StepOutput
from fastdiff.solvers.churn import ChurnedSolver


def euler_update(x, denoised, sigma, sigma_next, backend: str):
    """x' = r x + (1 - r) D with r = sigma'/sigma: the Euler step x + (sigma' - sigma) (x - D)/sigma."""
    ratio = sigma_next / sigma
    return solver_step(x, [denoised], ratio, [1.0 - ratio], backend=backend)


class Euler(ChurnedSolver):
    name = "euler"
    order = 1
    evaluations_per_step = 1
    learnable_schedule = True

    def step(self, ctx, i, x):
        x_hat, sigma_hat = self.start(ctx, i, x)
        denoised = yield Evaluation(x_hat, sigma_hat)
        yield StepOutput(euler_update(x_hat, denoised, sigma_hat, ctx.sigmas[i + 1], ctx.backend), denoised, x_hat, sigma_hat)
