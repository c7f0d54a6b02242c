"""LMS: the linear multistep (Adams-Bashforth) method in sigma on the probability-flow ODE dx/dsigma = d = (x - D)/sigma,
with the Lagrange polynomial through the last `order` derivatives integrated over the step (k-diffusion's and
ComfyUI's sample_lms, after Karras et al. 2022's use of it; docs/ALGORITHMS.md section 24).

With p = min(order, i + 1) and the nodes sigma_i, sigma_{i-1}, ..., sigma_{i-p+1}:
  x' = x + sum_{j<p} c_j d_{i-j},  c_j = int_{sigma_i}^{sigma'} prod_{k<p, k!=j} (s - sigma_{i-k})/(sigma_{i-j} - sigma_{i-k}) ds,
integrated exactly as a polynomial in u = s - sigma_i (the peers integrate it by adaptive quadrature, exact for these
degrees to rounding). Written as a x + sum b k over the current x and D and the stored (x, D) of earlier steps: one
solver step per evaluation. The step to sigma' = 0 is the loop's denoising step x' = D (ComfyUI's; k-diffusion takes
the LMS step to 0 instead). The global order is 2 for order >= 2 (1 for order = 1): the first step is Euler. From
sigma = inf the loop takes the Euler limit x' = D + sigma' n and the history starts after it.
"""

from __future__ import annotations

from fastdiff.solvers.base import Evaluation, Solver, StepOutput
from fastdiff.solvers.eps_multistep import eps_update
from fastdiff.validation import check_positive_int


def lms_coefficients(sigma_next: float, sigmas: list[float]) -> list[float]:
    """c_j for the nodes sigmas = [sigma_i, sigma_{i-1}, ...] (newest first) and the step to sigma_next (module docstring)."""
    nodes = [s - sigmas[0] for s in sigmas]
    h = sigma_next - sigmas[0]
    coefficients = []
    for j, node_j in enumerate(nodes):
        poly = [1.0]  # coefficients of u^0, u^1, ... of the j-th Lagrange basis polynomial
        for k, node_k in enumerate(nodes):
            if k != j:
                scale = 1.0 / (node_j - node_k)
                poly = [scale * (lower - node_k * same) for lower, same in zip([0.0, *poly], [*poly, 0.0], strict=True)]
        coefficients.append(sum(a * h ** (n + 1) / (n + 1) for n, a in enumerate(poly)))
    return coefficients


class LMS(Solver):
    name = "lms"
    evaluations_per_step = 1

    def __init__(self, order: int = 4):
        self.lms_order = check_positive_int(order, "order")
        self.order = min(self.lms_order, 2)  # the global order (module docstring)
        self.history: list[tuple] = []  # (x, D, sigma) of the previous steps, newest first

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = yield Evaluation(x, sigma)
        points = [(x, denoised, sigma), *self.history]
        x_next = eps_update(x, points, lms_coefficients(sigma_next, [s for _, _, s in points]), ctx.backend)
        self.history = points[: self.lms_order - 1]
        yield StepOutput(x_next, denoised, x, sigma)
