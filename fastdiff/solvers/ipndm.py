"""iPNDM: Adams-Bashforth on eps = (x - D)/sigma with fixed coefficients (Zhang & Chen 2023, DEIS arXiv 2204.13902;
the base solver of LD3, arXiv 2405.15506).

x' = x + (sigma' - sigma) eps_bar with eps_bar = sum_j w_j eps_{i-j}, the weights by warm-start order
1: (1), 2: (3, -1)/2, 3: (23, -16, 5)/12, 4: (55, -59, 37, -9)/24, the order growing by one per step up to
`max_order`. Written as a x + sum_j b_j k_j over the current x and D and the stored (x, D) of earlier steps, so
one solver step per evaluation and no eps tensor is ever materialized. The Adams-Bashforth steps are of order
`max_order` locally, but the first (Euler) step's O(h^2) local error stays in the result: the global order is 2
(1 for max_order = 1, which is Euler), as tests/test_ode_order.py measures.

The step to sigma' = 0 keeps the same formula, x' = x - sigma eps_bar (= D_i - sigma (eps_bar - eps_i)): the
reference implementations (LD3's samplers/ipndm.py, diff-sampler's) stop at sigma_min > 0 and never take that
step; ComfyUI's port replaces it by x' = D_i, which `denoise_to_zero=True` takes (the loop's denoising step). The two
differ by O(sigma_min) times the change in eps; neither is better on every target of bench/SHOOTOUT.md.
From sigma = inf the loop takes the step x' = D + sigma' n (the Euler limit, (kept, fresh) = (1, 0)) and the history
starts at step 1 with the first-step rule (Euler), as a run from a finite sigma_max would: the point at inf is not
carried into the Adams-Bashforth history.
"""

from __future__ import annotations

from fastdiff.solvers.base import Evaluation, Solver, StepOutput
from fastdiff.solvers.eps_multistep import eps_update
from fastdiff.validation import check_flag, check_int_in

ADAMS_BASHFORTH = (
    (1.0,),
    (3 / 2, -1 / 2),
    (23 / 12, -16 / 12, 5 / 12),
    (55 / 24, -59 / 24, 37 / 24, -9 / 24),
)


class IPNDM(Solver):
    name = "ipndm"
    evaluations_per_step = 1
    learnable_schedule = True
    denoises_at_zero = False  # the Adams-Bashforth formula is kept on the step to 0 (module docstring)

    def __init__(self, max_order: int = 4, denoise_to_zero: bool = False):
        self.max_order = check_int_in(max_order, "max_order", 1, len(ADAMS_BASHFORTH))
        self.denoises_at_zero = check_flag(denoise_to_zero, "denoise_to_zero")
        self.order = min(max_order, 2)  # the global order (module docstring)
        self.history: list[tuple] = []  # (x, D, sigma) of the previous steps, newest first

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = yield Evaluation(x, sigma)
        points = [(x, denoised, sigma), *self.history]
        dt = sigma_next - sigma
        x_next = eps_update(x, points, [dt * w for w in ADAMS_BASHFORTH[len(points) - 1]], ctx.backend)
        self.history = points[: self.max_order - 1]
        yield StepOutput(x_next, denoised, x, sigma)
