"""Singlestep DPM-Solver-1, 2 and 3 on the noise prediction eps = (x - D)/sigma (Lu et al. 2022, "DPM-Solver: A Fast
ODE Solver for Diffusion Probabilistic Model Sampling in Around 10 Steps", arXiv 2206.00927, Alg. 1 and 2; k-diffusion's
`DPMSolver` and `sample_dpm_fast`), in the VE coordinates x = x0 + sigma eps (docs/ALGORITHMS.md section 26).

With lambda = -log sigma, h = log(sigma/sigma'), the stage points sigma_r = e^{-(lambda + r h)} and phi(z) = expm1(z)/z - 1:
  order 1:  x' = x - sigma' expm1(h) eps,
  order 2:  u_1 = x - sigma_{r1} expm1(r1 h) eps,   r1 = 1/2,
            x' = x - sigma' expm1(h) eps - sigma' expm1(h) / (2 r1) (eps_1 - eps),
  order 3:  u_1 as above with r1 = 1/3,   r2 = 2/3,
            u_2 = x - sigma_{r2} expm1(r2 h) eps - sigma_{r2} (r2/r1) phi(r2 h) (eps_1 - eps),
            x' = x - sigma' expm1(h) eps - sigma' / r2 phi(h) (eps_2 - eps),
eps_j = (u_j - D(u_j, sigma_{rj}))/sigma_{rj}. The eps weights of each update sum to sigma - sigma_j, so it is
u_j = (sigma_j/sigma) x - expm1(-r_j h) D - sum_k c_jk (eps_k - eps), in which x cancels from every eps_k - eps: one
solver step x' = a x + sum_k b_k D_k per update, its x coefficient exact (the plain form's 1 - (1 - sigma'/sigma)
cancels ~sigma/sigma' ulps of x, which breaks the limit sigma -> inf). A step of order k takes k evaluations; `orders`
(empty or None: every step of `order`) gives one order per step of the grid (DPM-Solver-fast's pattern,
`fastdiff.sampling.sample_dpm_fast`), where the entries of the loop's own steps (from sigma = inf, to sigma' = 0) go
unused. The step to sigma' = 0 is the loop's denoising step x' = D (eps is undefined at 0). From sigma = inf the loop
takes the deterministic limit x' = D + sigma' n, the limit of the rule's own step for a denoiser constant in sigma only
(its stage points go to inf with sigma and its correction weights grow like sigma, as Heun's: with D = 1/(1 + sigma)
order 3's step grows without bound), so from t = 1 the rule converges at order 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, Solver, StepOutput
from fastdiff.validation import check_int_in

MAX_ORDER = 3
FRACTIONS = {1: (), 2: (0.5,), 3: (1.0 / 3.0, 2.0 / 3.0)}  # r_j of the stage points of each order


def _phi(z: float) -> float:
    """expm1(z)/z - 1 (= z/2 + z^2/6 + ...)."""
    return math.expm1(z) / z - 1.0


def correction_weights(order: int, h: float, sigma_of) -> list[list[float]]:
    """c_jk of u_j = (sigma_j/sigma) x - expm1(-r_j h) D - sum_k c_jk (eps_k - eps) for the stages j = 1..order-1
    and, last, x' (module docstring); sigma_of(r) is the stage point sigma e^{-r h}."""
    if order == 1:
        return [[]]
    if order == 2:
        (r1,) = FRACTIONS[2]
        return [[], [sigma_of(1.0) * math.expm1(h) / (2.0 * r1)]]
    r1, r2 = FRACTIONS[3]
    return [[], [sigma_of(r2) * (r2 / r1) * _phi(r2 * h)], [0.0, sigma_of(1.0) / r2 * _phi(h)]]


class DPMSolver(Solver):
    name = "dpm_solver"
    order = 3
    evaluations_per_step = 3

    def __init__(self, order: int = 3, orders: Sequence[int] | None = ()):
        check_int_in(order, "order", 1, MAX_ORDER)
        if orders is None or isinstance(orders, str | bytes) or not isinstance(orders, Sequence):
            if orders is not None:
                raise ValueError(f"orders must be None or a sequence of ints in [1, {MAX_ORDER}], got {orders!r}")
            orders = ()
        for k in orders:
            check_int_in(k, "orders entries", 1, MAX_ORDER)
        self.orders = tuple(orders)  # empty: every step of `order`
        # The measured global order: `order`, or the lowest order of `orders` (one low-order step sets the rate).
        self.order = min(self.orders, default=order)
        # A step of order k takes k evaluations: with `orders` the count of its largest step.
        self.evaluations_per_step = max(self.orders, default=order)
        self.step_order = order

    def step(self, ctx, i, x):
        if self.orders and len(self.orders) != len(ctx.sigmas) - 1:
            raise ValueError(f"orders must have one entry per step of the grid ({len(ctx.sigmas) - 1}), got {len(self.orders)}")
        order = self.orders[i] if self.orders else self.step_order
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        h = math.log(sigma / sigma_next)

        def sigma_of(r: float) -> float:
            return sigma_next if r == 1.0 else sigma * math.exp(-r * h)

        Ds = [(yield Evaluation(x, sigma))]
        differences = []  # eps_k - eps as D coefficients: the x parts cancel exactly
        fractions = (*FRACTIONS[order], 1.0)
        for j, (r, c) in enumerate(zip(fractions, correction_weights(order, h, sigma_of), strict=True)):
            bs = [-math.expm1(-r * h)] + [0.0] * j
            for c_k, delta in zip(c, differences, strict=False):
                bs = [b - c_k * d for b, d in zip(bs, delta, strict=False)] + bs[len(delta) :]
            terms = [(d, b) for d, b in zip(Ds, bs, strict=True) if b != 0.0]
            s_j = sigma_of(r)
            u = solver_step(x, [d for d, _ in terms], s_j / sigma, [b for _, b in terms], backend=ctx.backend)
            if r == 1.0:
                yield StepOutput(u, Ds[0], x, sigma)
                return
            Ds.append((yield Evaluation(u, s_j)))
            # eps_j - eps = (u_j - D_j)/sigma_j - (x - D)/sigma, u_j = (sigma_j/sigma) x + sum_m b_m D_m
            delta = [b / s_j for b in bs] + [-1.0 / s_j]
            delta[0] += 1.0 / sigma
            differences.append(delta)
