"""iPNDM-v: iPNDM with step-size-dependent multistep weights on eps = (x - D)/sigma, for grids that are not uniform
in sigma (the `ipndm_v` solver of zju-pi/diff-sampler, Zhou et al. 2024, arXiv 2312.00094; ComfyUI's sample_ipndm_v).

x' = x + h eps_bar with h = sigma' - sigma_i and eps_bar = sum_j w_j eps_{i-j}, the order growing by one per step up to
`max_order`. With h_k = sigma_{i-k+1} - sigma_{i-k} (h_1 = sigma_i - sigma_{i-1}, ...), r = h/h_1:
  order 2: w = (1 + r/2, -r/2), the exact variable-step Adams-Bashforth weights;
  order 3: order 2 plus c_3 (1, -(1 + h_1/h_2), h_1/h_2), c_3 = (1 - h^2/(3 h_1 (h_1 + h_2)))/2;
  order 4: order 3 plus c_4 (1, -(1 + h_1/h_2 + q), h_1/h_2 + q (1 + h_2/h_3), -q h_2/h_3), q = h_1 (h_1 + h_2)/(h_2 (h_2 + h_3)),
           c_4 = ((1 - h/(3 (h + h_1)))/2 + (1 - h/(2 (h + h_1))) h/(6 (h + h_1 + h_2)))
                 h (h + h_1)(h + h_1 + h_2)/(h_1 (h_1 + h_2)(h_1 + h_2 + h_3)).
The bracket of c_3 is h_1 (h_1 + h_2) times the second divided difference of eps, that of c_4 h_1 (h_1 + h_2)
(h_1 + h_2 + h_3) times the third one, so every weight vector sums to 1. The reference writes the last order-4 weight
-q h_1/h_2: its weights sum to 1 + q (h_2/h_3 - h_1/h_2) c_4, not consistent unless the steps are in geometric
progression, and not convergent from sigma = inf on flow grids; fastdiff uses -q h_2/h_3, the same on geometric
(logsnr) grids and with max_order <= 3 (docs/ALGORITHMS.md section 16). On a uniform grid orders 2 and 3 are iPNDM's
(3, -1)/2 and (23, -16, 5)/12. The global order is 2 (1 for max_order = 1): the first step is Euler, as in iPNDM.

Written as a x + sum_j b_j k_j over the current x and D and the stored (x, D) of earlier steps: one solver step per
evaluation. The step to sigma' = 0 is the loop's denoising step x' = D (ComfyUI's; the reference stops at sigma_min).
From sigma = inf the loop takes the Euler limit x' = D + sigma' n and the history starts after it.
"""

from __future__ import annotations

from fastdiff.solvers.base import Evaluation, Solver, StepOutput
from fastdiff.solvers.eps_multistep import eps_update
from fastdiff.validation import check_int_in

MAX_ORDER = 4


def ipndm_v_weights(sigma_next: float, sigmas: list[float]) -> list[float]:
    """The weights w_j of eps at sigmas = [sigma_i, sigma_{i-1}, ...] (newest first, 1 to 4 points) for the step to
    sigma_next (module docstring)."""
    h = sigma_next - sigmas[0]
    if len(sigmas) == 1:
        return [1.0]
    h1 = sigmas[0] - sigmas[1]
    w = [1.0 + h / (2 * h1), -h / (2 * h1)]
    if len(sigmas) == 2:
        return w
    h2 = sigmas[1] - sigmas[2]
    c3 = (1.0 - h * h / (3 * h1 * (h1 + h2))) / 2
    w = [w[0] + c3, w[1] - (1.0 + h1 / h2) * c3, c3 * h1 / h2]
    if len(sigmas) == 3:
        return w
    h3 = sigmas[2] - sigmas[3]
    q = h1 * (h1 + h2) / (h2 * (h2 + h3))
    c4 = (
        ((1.0 - h / (3 * (h + h1))) / 2 + (1.0 - h / (2 * (h + h1))) * h / (6 * (h + h1 + h2)))
        * (h * (h + h1) * (h + h1 + h2))
        / (h1 * (h1 + h2) * (h1 + h2 + h3))
    )
    return [
        w[0] + c4,
        w[1] - (1.0 + h1 / h2 + q) * c4,
        w[2] + (h1 / h2 + q * (1.0 + h2 / h3)) * c4,
        -c4 * q * h2 / h3,
    ]


class IPNDMV(Solver):
    name = "ipndm_v"
    evaluations_per_step = 1

    def __init__(self, max_order: int = 4):
        self.max_order = check_int_in(max_order, "max_order", 1, MAX_ORDER)
        self.order = min(max_order, 2)  # the global order (module docstring)
        self.history: list[tuple] = []  # (x, D, sigma) of the previous steps, newest first

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = yield Evaluation(x, sigma)
        points = [(x, denoised, sigma), *self.history]
        dt = sigma_next - sigma
        coefficients = [dt * w for w in ipndm_v_weights(sigma_next, [s for _, _, s in points])]
        x_next = eps_update(x, points, coefficients, ctx.backend)
        self.history = points[: self.max_order - 1]
        yield StepOutput(x_next, denoised, x, sigma)
