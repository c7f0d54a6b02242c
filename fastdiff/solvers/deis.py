"""DEIS, the time-quadratic Adams-Bashforth rule tAB (Zhang & Chen 2023, "Fast Sampling of Diffusion Models with
Exponential Integrator", arXiv 2204.13902, sec. 4; ComfyUI's sample_deis with its default deis_mode "tab",
docs/ALGORITHMS.md section 22).

In the variance-exploding convention the probability-flow ODE is dx/dsigma = eps(x, sigma) = (x - D)/sigma, so
x' = x + int_sigma^sigma' eps dsigma. tAB replaces eps on the step by the polynomial through the last p values
eps_{i-j} (p = min(max_order, i + 1): Euler first) in the VP time t of EDM's VP schedule,
  t(sigma) = (sqrt(beta_min^2 + 2 beta_d log(1 + sigma^2)) - beta_min) / beta_d,
beta_d = 2 (log(1 + 0.002^2)/1e-3 - log(1 + 80^2))/(1e-3 - 1), beta_min = log(1 + 80^2) - beta_d/2 (t(80) = 1,
t(0.002) = 1e-3), and integrates it exactly:
  x' = x + sum_j C_j eps_{i-j},  C_j = int_sigma^sigma' L_j(t(s)) ds,  L_j(t) = prod_{k != j} (t - t_k)/(t_j - t_k),
t_k = t(sigma_{i-k}). The integral is Gauss-Legendre in sigma (64 nodes, exact to rounding on these smooth
integrands); ComfyUI sums the same integrand written in t, dsigma = sigma'(t) dt, on 10^4 points of a rectangle rule, an
O(1/N) quadrature error (about 1e-4 of the multistep correction), and rounds beta_d, beta_min to float32; the two
coefficient sets agree to that accuracy (tests/test_deis.py). The global order is 2: the Euler warm-up step leaves its
O(h^2) local error in the result, as in iPNDM.

Written as a x + sum_j b_j k_j over x, D and the stored (x, D) of earlier steps: one solver step per evaluation.
The step to sigma' = 0 is the loop's denoising step x' = D (ComfyUI's order-1 step there). From sigma = inf the loop
takes the Euler limit x' = D + sigma' n and the history starts after it.
"""

from __future__ import annotations

import math

import numpy as np

from fastdiff.solvers.base import Evaluation, Solver, StepOutput
from fastdiff.solvers.eps_multistep import eps_update
from fastdiff.validation import check_int_in

MAX_ORDER = 4
VP_EPSILON, VP_SIGMA_MIN, VP_SIGMA_MAX = 1e-3, 0.002, 80.0
VP_BETA_D = 2 * (math.log1p(VP_SIGMA_MIN**2) / VP_EPSILON - math.log1p(VP_SIGMA_MAX**2)) / (VP_EPSILON - 1)
VP_BETA_MIN = math.log1p(VP_SIGMA_MAX**2) - 0.5 * VP_BETA_D
# Gauss-Legendre nodes and weights as Python floats: the coefficients are host arithmetic that torch.compile folds
NODES, WEIGHTS = (tuple(float(v) for v in a) for a in np.polynomial.legendre.leggauss(64))


def vp_time(sigma: float) -> float:
    """t(sigma) of EDM's VP schedule (module docstring)."""
    return (math.sqrt(VP_BETA_MIN**2 + 2 * VP_BETA_D * math.log1p(sigma * sigma)) - VP_BETA_MIN) / VP_BETA_D


def deis_coefficients(sigma_next: float, sigmas: list[float]) -> list[float]:
    """C_j = int_{sigmas[0]}^{sigma_next} L_j(t(s)) ds for sigmas = [sigma_i, sigma_{i-1}, ...] (newest first)."""
    half, mid = (sigma_next - sigmas[0]) / 2, (sigma_next + sigmas[0]) / 2
    t = [vp_time(mid + half * node) for node in NODES]
    ts = [vp_time(s) for s in sigmas]
    coefficients = []
    for j, t_j in enumerate(ts):
        basis = [1.0] * len(t)
        for k, t_k in enumerate(ts):
            if k != j:
                basis = [b * (u - t_k) / (t_j - t_k) for b, u in zip(basis, t, strict=True)]
        total = 0.0
        for w, b in zip(WEIGHTS, basis, strict=True):
            total += w * b
        coefficients.append(half * total)
    return coefficients


class DEIS(Solver):
    name = "deis"
    evaluations_per_step = 1
    order = 2  # measured (module docstring)

    def __init__(self, max_order: int = 3):
        self.max_order = check_int_in(max_order, "max_order", 1, MAX_ORDER)
        if max_order == 1:
            self.order = 1
        self.history: list[tuple] = []  # (x, D, sigma) of the previous steps, newest first

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = yield Evaluation(x, sigma)
        points = [(x, denoised, sigma), *self.history][: self.max_order]
        x_next = eps_update(x, points, deis_coefficients(sigma_next, [s for _, _, s in points]), ctx.backend)
        self.history = points[: self.max_order - 1]
        yield StepOutput(x_next, denoised, x, sigma)
