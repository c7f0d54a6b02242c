"""DPM-Solver++(3M), the third-order multistep data-prediction solver (Lu et al. 2022, arXiv 2211.01095, sec. 4 and
App. B), as diffusers' DPMSolverMultistepScheduler runs it with solver_order=3, algorithm_type="dpmsolver++"
(docs/ALGORITHMS.md section 23).

With lambda = -log sigma, h = lambda_{i+1} - lambda_i, h_k = lambda_{i-k} - lambda_{i-k-1}, r_k = h_k/h and
D1_0 = (D_i - D_{i-1})/r_0, D1_1 = (D_{i-1} - D_{i-2})/r_1:
  x' = (sigma'/sigma) x - expm1(-h) D_i + (expm1(-h)/h + 1) D1 - ((expm1(-h) + h)/h^2 - 1/2) D2,
  D1 = D1_0 + r_0/(r_0 + r_1) (D1_0 - D1_1),  D2 = (D1_0 - D1_1)/(r_0 + r_1).
Warm-up: step 0 is the first-order step x' = (sigma'/sigma) x - expm1(-h) D_i, step 1 the second-order one,
"midpoint" x' = (sigma'/sigma) x - expm1(-h) (D_i + D1_0/2) (DPM-Solver++(2M)) or "heun"
x' = (sigma'/sigma) x - expm1(-h) D_i + (expm1(-h)/h + 1) D1_0. With `lower_order_final` on grids of fewer than 15
steps, the last step is first order and the one before at most second order (diffusers' rule). The step to sigma' = 0
is the loop's denoising step x' = D, which is diffusers' first-order step there. The global order is 2: the first
step's O(h^2) local error stays in the result. From sigma = inf the loop takes the limit x' = D + sigma' n of the
first-order step and the history starts after it.
"""

from __future__ import annotations

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers import scalar
from fastdiff.solvers.base import Evaluation, Solver, StepOutput
from fastdiff.validation import check_flag

SOLVER_TYPES = ("midpoint", "heun")
LOWER_ORDER_FINAL_STEPS = 15  # diffusers lowers the final orders only on grids of fewer steps than this


class DPMpp3M(Solver):
    name = "dpmpp_3m"
    order = 2  # the global order (module docstring)
    evaluations_per_step = 1
    learnable_schedule = True

    def __init__(self, solver_type: str = "midpoint", lower_order_final: bool = True):
        if solver_type not in SOLVER_TYPES:
            raise ValueError(f"solver_type must be one of {SOLVER_TYPES}, got {solver_type!r}")
        check_flag(lower_order_final, "lower_order_final")
        self.solver_type = solver_type
        self.lower_order_final = lower_order_final
        self.history: list[tuple] = []  # (D, sigma) of the previous steps, newest first

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = yield Evaluation(x, sigma)
        points = [(denoised, sigma), *self.history][:3]
        order = len(points)
        steps = len(ctx.sigmas) - 1
        if self.lower_order_final and steps < LOWER_ORDER_FINAL_STEPS:
            order = min(order, steps - i)
        h = scalar.log(sigma / sigma_next)
        em1 = scalar.expm1(-h)
        c1 = em1 / h + 1.0  # weight of the first difference D1 (diffusers' "heun" form)
        ks, bs = [denoised], [-em1]
        if order == 2:
            r0 = scalar.log(points[1][1] / sigma) / h
            w0 = (-0.5 * em1 if self.solver_type == "midpoint" else c1) / r0  # weight of D_i - D_{i-1}
            ks, bs = [denoised, points[1][0]], [bs[0] + w0, -w0]
        elif order == 3:
            r0 = scalar.log(points[1][1] / sigma) / h
            r1 = scalar.log(points[2][1] / points[1][1]) / h
            c2 = (em1 + h) / (h * h) - 0.5
            w0 = (c1 * (1.0 + r0 / (r0 + r1)) - c2 / (r0 + r1)) / r0  # weight of D_i - D_{i-1}
            w1 = (c2 - c1 * r0) / ((r0 + r1) * r1)  # weight of D_{i-1} - D_{i-2}
            ks, bs = [denoised, points[1][0], points[2][0]], [bs[0] + w0, w1 - w0, -w1]
        x_next = solver_step(x, ks, sigma_next / sigma, bs, backend=ctx.backend)
        self.history = points[:2]
        yield StepOutput(x_next, denoised, x, sigma)
