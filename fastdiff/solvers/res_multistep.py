"""RES multistep: the second-order multistep exponential integrator of the refined exponential solver (Zhang et al.
2023, "Improved order analysis and design of exponential integrator for diffusion models", arXiv 2308.02157; ComfyUI's
`sample_res_multistep` and `sample_res_multistep_ancestral`), VE data prediction (docs/ALGORITHMS.md section 25).

With t = -log sigma, each step goes to sigma_down (the ancestral split of sigma -> sigma', `ancestral_step`) and adds
s_noise sigma_up z. Over h = log(sigma/sigma_down), D linear in t through the previous D_1 at the node c2 = -h_1/h:
x' = e^{-h} x + h (phi_1(-h) - phi_2(-h)/c2) D + h phi_2(-h)/c2 D_1 + s_noise sigma_up z,
phi_1(z) = (e^z - 1)/z, phi_2(z) = (phi_1(z) - 1)/z, so h phi_1(-h) = 1 - e^{-h} and h^2 phi_2(-h) = h - 1 + e^{-h}.
h_1 = log(sigma_1/sigma_down_1) is the previous step's own exponent (ComfyUI's node; with eta = 0 it is the distance
to the previous evaluation). The first step, and a step after one whose sigma_down is 0 (its node is at c2 = -inf,
weight 0), is the first-order step x' = e^{-h} x + (1 - e^{-h}) D. One evaluation per step. From sigma = inf the loop
takes euler_ancestral's limit (the first step is that step) and the history starts after it.
"""

from __future__ import annotations

import math

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, StepOutput
from fastdiff.solvers.eta_noise import EtaNoiseSolver
from fastdiff.solvers.euler_ancestral import EulerAncestral, ancestral_step


class ResMultistepAncestral(EtaNoiseSolver):
    """Weak order 2 on the exact output laws of Gaussian targets (eta 0.5 and 1, tests/test_res_multistep.py); eta = 0
    is `res_multistep`, order 2 as an ODE solver."""

    name = "res_multistep_ancestral"
    order = 2
    evaluations_per_step = 1

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0):
        super().__init__(eta, s_noise)
        self.previous = None  # (D_1, h_1) of the previous step, None where it leaves no node

    from_infinity = EulerAncestral.from_infinity  # the first step is the ancestral Euler step

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = yield Evaluation(x, sigma)
        sigma_down, sigma_up = ancestral_step(sigma, sigma_next, self.eta)
        ratio = sigma_down / sigma  # e^{-h}
        h = math.log(sigma / sigma_down) if sigma_down > 0.0 else None
        if h is None or self.previous is None:
            ks, bs = [denoised], [1.0 - ratio]
        else:
            previous_denoised, h_1 = self.previous
            w = (h + math.expm1(-h)) / h_1  # h phi_2(-h)/c2 = -w, D_1's weight
            ks, bs = [denoised, previous_denoised], [-math.expm1(-h) + w, -w]
        noise = [(self.s_noise * sigma_up, ctx.draw(i))] if self.stochastic else []
        x_next = solver_step(x, ks, ratio, bs, noise=noise, backend=ctx.backend)
        self.previous = None if h is None else (denoised, h)
        yield StepOutput(x_next, denoised, x, sigma)


class ResMultistep(ResMultistepAncestral):
    """Order 2 (tests/test_ode_order.py); `res_multistep_ancestral` with eta = 0."""

    name = "res_multistep"

    def __init__(self):
        super().__init__(eta=0.0)
