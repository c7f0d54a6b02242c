"""Gradient estimation: Euler steps on d = (x - D)/sigma with the direction extrapolated from the previous step's,
d_bar = gamma d_i + (1 - gamma) d_{i-1} (Permenter & Yuan 2024, "Interpreting and Improving Diffusion Models from an
Optimization Perspective", arXiv 2306.04848; ComfyUI's sample_gradient_estimation, docs/ALGORITHMS.md
section 21).

x' = x + (sigma' - sigma) d_bar, with d_bar = d_i on the first step (no previous direction). gamma >= 0; gamma = 2
(`ge_gamma`, the paper's choice) extrapolates d beyond d_i; gamma = 1 is Euler and gamma = 3/2 the two-step
Adams-Bashforth rule of a uniform grid. The weights sum to 1, so the rule is consistent; its local error
h ((gamma - 1) h_prev - h/2) d' is O(h^2) unless gamma = 3/2 on a smooth grid (h_prev/h = 1 + O(h)): global order 1,
and 2 for gamma = 3/2.

Written as a x + sum_j b_j k_j over x, D and the stored (x, D) of the previous step: one solver step per evaluation.
The step to sigma' = 0 is the loop's denoising step x' = D (ComfyUI's). From sigma = inf the loop takes the Euler limit
x' = D + sigma' n and the history starts after it.
"""

from __future__ import annotations

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, Solver, StepOutput
from fastdiff.validation import check_number


class GradientEstimation(Solver):
    name = "gradient_estimation"
    evaluations_per_step = 1

    def __init__(self, ge_gamma: float = 2.0):
        self.ge_gamma = check_number(ge_gamma, "ge_gamma")  # finite, >= 0
        self.order = 2 if self.ge_gamma == 1.5 else 1  # measured (module docstring)
        self.previous = None  # (x, D, sigma) of the previous step

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = yield Evaluation(x, sigma)
        dt = sigma_next - sigma
        if self.previous is None:
            x_next = solver_step(x, [denoised], 1.0 + dt / sigma, [-dt / sigma], backend=ctx.backend)
        else:
            x_prev, d_prev, s_prev = self.previous
            w_cur, w_prev = dt * self.ge_gamma / sigma, dt * (1.0 - self.ge_gamma) / s_prev
            x_next = solver_step(x, [denoised, x_prev, d_prev], 1.0 + w_cur, [-w_cur, w_prev, -w_prev], backend=ctx.backend)
        self.previous = (x, denoised, sigma)
        yield StepOutput(x_next, denoised, x, sigma)
