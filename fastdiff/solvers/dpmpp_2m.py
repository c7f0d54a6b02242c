"""DPM-Solver++(2M), the second-order multistep data-prediction solver (Lu et al. 2022, arXiv 2211.01095, Alg. 2).

With lambda = -log sigma and h = lambda' - lambda: x' = (sigma'/sigma) x - expm1(-h) D_hat, where D_hat = D_i on
the first step and otherwise D_hat = (1 + 1/(2r)) D_i - 1/(2r) D_{i-1} with r = h_{i-1}/h. One evaluation per step.
From sigma = inf the first step's limit is x' = D + sigma' n, (kept, fresh) = (1, 0), and the history starts at step 1:
the correction weight 1/(2r) = h/(2 h_{i-1}) of a previous point at lambda = -inf is 0, so step 1's first-step form is
the exact limit there too.
"""

from __future__ import annotations

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers import scalar
from fastdiff.solvers.base import Evaluation, Solver, StepOutput


class DPMpp2M(Solver):
    name = "dpmpp_2m"
    order = 2
    evaluations_per_step = 1
    learnable_schedule = True

    def __init__(self):
        self.previous_denoised = None

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = yield Evaluation(x, sigma)
        h = scalar.log(sigma / sigma_next)
        weight = -scalar.expm1(-h)
        if self.previous_denoised is None:
            ks, bs = [denoised], [weight]
        else:
            half_inv_r = 0.5 * h / scalar.log(ctx.sigmas[i - 1] / sigma)
            ks, bs = [denoised, self.previous_denoised], [weight * (1.0 + half_inv_r), -weight * half_inv_r]
        x_next = solver_step(x, ks, sigma_next / sigma, bs, backend=ctx.backend)
        self.previous_denoised = denoised
        yield StepOutput(x_next, denoised, x, sigma)
