"""SEEDS-2 and SEEDS-3, stochastic explicit exponential derivative-free solvers (Gonzalez et al. 2023, "SEEDS:
Exponential SDE Solvers for Fast High-Quality Sampling from Diffusion Models", arXiv 2305.14267; ComfyUI's
`sample_seeds_2` / `sample_seeds_3`), VE data-prediction form (docs/ALGORITHMS.md section 19).

With h = log(sigma/sigma'), the stage points sigma_j = sigma e^{-r_j h} (r_0 = 0, r_last = 1) and
E(u) = -expm1(-(1 + eta) u h), each stage is the DPM-Solver++ SDE step from sigma to sigma_j with a combination of the
earlier stages' D:
x_j = (sigma_j/sigma) e^{-eta r_j h} x + sum_k a_jk D_k + s_noise sigma_j W_j,
W_j = e^{-eta (r_j - r_{j-1}) h} W_{j-1} + sqrt(-expm1(-2 eta (r_j - r_{j-1}) h)) z_j,   W_0 = 0,
so that W_j is the OU noise of [0, r_j h] and z_j the Gaussian of the sub-interval (sigma_{j-1}, sigma_j): every stage
sees the part of the step's Brownian path before it, and x' = x_last has the variance of the exact step. SEEDS-3
(r_1, r_2) = (1/3, 2/3): a_1 = [E(r_1)], a_2 = [E(r_2) - a, a] with a = (r_2/r_1) psi(r_2), psi(u) = 1 - E(u)/((1 + eta) u h),
a_3 = [E(1) - b, 0, b] with b = psi(1)/r_2. SEEDS-2 (r = 1/2): a_2 = [E(1) (1 - 1/(2r)), E(1)/(2r)].
Each update carries the previous stage's noise through x_{j-1}: s_noise sigma_j e^{-eta (r_j - r_{j-1}) h} W_{j-1} =
kappa_j (x_{j-1} - (sigma_{j-1}/sigma) e^{-eta r_{j-1} h} x - sum_k a_{j-1,k} D_k), kappa_j = (sigma_j / sigma_{j-1})
e^{-eta (r_j - r_{j-1}) h}, so each Gaussian enters one `solver_step` call. eta = 0 is the deterministic exponential
Runge-Kutta step. From sigma = inf the kept part e^{-eta h} n vanishes for eta > 0 and W_last tends to z_last: (0, s_noise).
"""

from __future__ import annotations

import math

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, Solver, StepOutput
from fastdiff.validation import check_number


def _rise(u: float) -> float:
    """-expm1(-u): the weight of D in the exponential step of length u in lambda."""
    return -math.expm1(-u)


def _psi(u: float) -> float:
    """1 - (1 - e^{-u})/u, written without cancellation near 0 (= u/2 - u^2/6 + ...)."""
    if u < 1e-4:
        return u * (0.5 - u / 6.0 + u * u / 24.0)
    return 1.0 - _rise(u) / u


class SEEDS(Solver):
    """The stage walk shared by SEEDS-2 and SEEDS-3: `fractions` (r_1, ..., 1) and `weights(h)`, the a_jk per stage."""

    fractions: tuple[float, ...]
    stochastic = True  # the defaults draw noise; the instance says for its options

    def __init__(self, eta: float, s_noise: float):
        self.eta = check_number(eta, "eta")
        self.s_noise = check_number(s_noise, "s_noise")
        self.stochastic = self.eta > 0.0 and self.s_noise > 0.0
        self.evaluations_per_step = len(self.fractions)

    def from_infinity(self) -> tuple[float, float]:
        return (0.0, self.s_noise) if self.eta > 0.0 else (1.0, 0.0)

    def weights(self, h: float) -> list[list[float]]:
        raise NotImplementedError

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        h = math.log(sigma / sigma_next)
        Ds = [(yield Evaluation(x, sigma))]
        previous = None  # (x_{j-1}, its decay, its D weights)
        r_last, sigma_last = 0.0, sigma
        for j, (r, a) in enumerate(zip(self.fractions, self.weights(h), strict=True)):
            sigma_j = sigma_next if r == 1.0 else sigma * math.exp(-r * h)
            decay = sigma_j / sigma * math.exp(-self.eta * r * h)
            ks, a_x, bs, noise = Ds[:], decay, list(a), []
            if self.stochastic:
                seg = self.eta * (r - r_last) * h
                z = ctx.draw(i, j, None if j == 0 else sigma_last, None if r == 1.0 else sigma_j)
                noise = [(self.s_noise * sigma_j * math.sqrt(_rise(2.0 * seg)), z)]
                if previous is not None:
                    x_prev, decay_prev, a_prev = previous
                    kappa = sigma_j / sigma_last * math.exp(-seg)
                    a_x -= kappa * decay_prev
                    bs = [b - kappa * (a_prev[k] if k < len(a_prev) else 0.0) for k, b in enumerate(bs)]
                    ks, bs = [*ks, x_prev], [*bs, kappa]
            terms = [(k, b) for k, b in zip(ks, bs, strict=True) if b != 0.0]  # SEEDS-3's x' has no D_2 term
            x_j = solver_step(x, [k for k, _ in terms], a_x, [b for _, b in terms], noise=noise, backend=ctx.backend)
            if r == 1.0:
                yield StepOutput(x_j, Ds[0], x, sigma)
                return
            previous = (x_j, decay, a)
            r_last, sigma_last = r, sigma_j
            Ds.append((yield Evaluation(x_j, sigma_j)))


class SEEDS3(SEEDS):
    """Weak order 2 (measured, tests/test_seeds.py); eta = 0, the exponential Runge-Kutta ODE step, has order 3."""

    name = "seeds_3"

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0, r_1: float = 1.0 / 3.0, r_2: float = 2.0 / 3.0):
        self.r_1 = check_number(r_1, "r_1")
        self.r_2 = check_number(r_2, "r_2")
        if not 0.0 < self.r_1 < self.r_2 < 1.0:
            raise ValueError(f"r_1 and r_2 must satisfy 0 < r_1 < r_2 < 1, got r_1={r_1!r}, r_2={r_2!r}")
        self.fractions = (self.r_1, self.r_2, 1.0)
        super().__init__(eta, s_noise)
        self.order = 3 if self.eta == 0.0 else 2

    def weights(self, h):
        h_eta = (1.0 + self.eta) * h
        a = self.r_2 / self.r_1 * _psi(self.r_2 * h_eta)
        b = _psi(h_eta) / self.r_2
        return [[_rise(self.r_1 * h_eta)], [_rise(self.r_2 * h_eta) - a, a], [_rise(h_eta) - b, 0.0, b]]


class SEEDS2(SEEDS):
    """Weak order 2, and order 2 as the ODE step (eta = 0), measured in tests/test_seeds.py."""

    name = "seeds_2"
    order = 2

    def __init__(self, eta: float = 1.0, s_noise: float = 1.0, r: float = 0.5):
        self.r = check_number(r, "r")
        if not 0.0 < self.r < 1.0:
            raise ValueError(f"r must be in (0, 1), got {r!r}")
        self.fractions = (self.r, 1.0)
        super().__init__(eta, s_noise)

    def weights(self, h):
        h_eta = (1.0 + self.eta) * h
        rise, fac = _rise(h_eta), 0.5 / self.r
        return [[_rise(self.r * h_eta)], [rise * (1.0 - fac), rise * fac]]
