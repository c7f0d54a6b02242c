"""Heun's second-order method on the probability-flow ODE, with EDM's optional churn (Karras et al. 2022, Alg. 2).

Euler predictor x~ = r x + (1 - r) D(x, sigma_hat), r = sigma'/sigma_hat, then the trapezoidal corrector
x' = x + (sigma' - sigma_hat) (d + d~) / 2 with d = (x - D)/sigma_hat, d~ = (x~ - D(x~, sigma'))/sigma';
substituting x~ gives x' = r x + (1 - r - c) D + c D~ with c = (sigma_hat - sigma')/(2 sigma'). The step to
sigma' = 0 is the loop's denoising step x' = D (one evaluation), so a grid of n steps ending in 0 costs 2n - 1.
The weight c on D~ grows as sigma_hat / (2 sigma'): a float16 / bfloat16 model's output rounding is amplified by it
on steps with a large ratio (tests/test_low_precision.py), where the data-prediction solvers (dpmpp_2m) stay bounded.
As sigma -> inf that weight grows without bound, so the step has a limit only where D~ = D (a constant denoiser):
the step from sigma = inf is the Euler limit x' = D + sigma' n, (kept, fresh) = (1, 0).
"""

from __future__ import annotations

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, StepOutput
from fastdiff.solvers.churn import ChurnedSolver
from fastdiff.solvers.euler import euler_update


class Heun(ChurnedSolver):
    name = "heun"
    order = 2
    evaluations_per_step = 2
    learnable_schedule = True

    def step(self, ctx, i, x):
        x_hat, sigma_hat = self.start(ctx, i, x)
        denoised = yield Evaluation(x_hat, sigma_hat)
        sigma_next = ctx.sigmas[i + 1]
        x_euler = euler_update(x_hat, denoised, sigma_hat, sigma_next, ctx.backend)
        denoised_euler = yield Evaluation(x_euler, sigma_next)
        ratio = sigma_next / sigma_hat
        c = (sigma_hat - sigma_next) / (2.0 * sigma_next)
        x_next = solver_step(x_hat, [denoised, denoised_euler], ratio, [1.0 - ratio - c, c], backend=ctx.backend)
        yield StepOutput(x_next, denoised, x_hat, sigma_hat)
