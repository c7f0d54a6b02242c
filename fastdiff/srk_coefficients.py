"""Float64 step coefficients of the stochastic Runge-Kutta (SRK) samplers (docs/ALGORITHMS.md sections 3 and 11).

Every coefficient is a combination of the exponential tails E_n(x) = e^x - sum_{k<n} x^k / k!,
which the closed forms lose to cancellation for small x; `exp_tail` switches to the Taylor series
there. The coupling of the two Gaussians of a step (xi1 the step's noise, xi2 the time integral of
the noise path that the stage needs) is what gives the second order: with `coupled=False` the
Gaussians keep their variances but become independent, the ablation that shows it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fastdiff.validation import check_positive

SERIES_RADIUS = 2.0
_EPS = 2.0**-60


def exp_tail(n: int, x: float) -> float:
    """E_n(x) = e^x - sum_{k<n} x^k / k! (E_0 = e^x, E_1 = expm1), accurate to float64 rounding for every x."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if abs(x) >= SERIES_RADIUS or n == 0:
        return math.exp(x) - sum(x**k / math.factorial(k) for k in range(n))
    term = x**n / math.factorial(n)
    total = term
    k = n
    while abs(term) > _EPS * abs(total):
        k += 1
        term *= x / k
        total += term
    return total


def scaled_exp_tail(n: int, x: float) -> float:
    """e^{-x} E_n(x) = 1 - e^{-x} sum_{k<n} x^k / k!, without overflow for large x >= 0."""
    if x >= SERIES_RADIUS:
        return 1.0 - math.exp(-x) * sum(x**k / math.factorial(k) for k in range(n))
    return math.exp(-x) * exp_tail(n, x)


@dataclass(frozen=True)
class NoisePair:
    """Variances V1 = Var xi1, V2 = Var xi2 and covariance C12 of a step's two Gaussians.

    `stage_scale` z2 is xi2 and `update_scales` (on z1, z2) give xi1 from the independent
    standard normals z1, z2: xi1 = (C12/sqrt(V2)) z2 + sqrt(V1 - C12^2/V2) z1.
    """

    V1: float
    V2: float
    C12: float

    @property
    def stage_scale(self) -> float:
        return math.sqrt(self.V2)

    def update_scales(self, coupled: bool = True) -> tuple[float, float]:
        """(scale of z1, scale of z2) in xi1; uncoupled keeps Var xi1 = V1 with xi1 independent of xi2."""
        if not coupled:
            return math.sqrt(self.V1), 0.0
        along = self.C12 / math.sqrt(self.V2)
        return math.sqrt(max(self.V1 - along * along, 0.0)), along


@dataclass(frozen=True)
class SRKStep:
    """One SRK step of log-length h: stage at fraction c, weights w0, w1, stage noise gain B."""

    h: float
    c: float
    w0: float
    w1: float
    B: float
    noise: NoisePair


def score_form(h: float) -> SRKStep:
    """Section 3, VP coordinates y = alpha x, h = log(alpha'/alpha) > 0:

    phi0 = E_1(h), phi1 = E_2(h), V1 = E_1(2h), V2 = E_3(2h) - 4 E_3(h) (= expm1(2h) - 4 expm1(h) + 2h),
    C12 = expm1(h)^2, c = 2 phi1^2 / (h V2) -> 3/4, w1 = phi1 / (c h), w0 = phi0 - w1, B = c h / phi1.
    The stage is y~ = y + c h (y + 2 s) + B xi2, the update e^h y + 2 w0 s + 2 w1 s~ + xi1.
    """
    h = _check_h(h)
    phi0, phi1 = exp_tail(1, h), exp_tail(2, h)
    V2 = exp_tail(3, 2.0 * h) - 4.0 * exp_tail(3, h)
    c = 2.0 * phi1 * phi1 / (h * V2)
    w1 = phi1 / (c * h)
    return SRKStep(h, c, phi0 - w1, w1, c * h / phi1, NoisePair(exp_tail(1, 2.0 * h), V2, exp_tail(1, h) ** 2))


def data_form(h: float) -> SRKStep:
    """Section 11, data prediction in EDM variables, h = log(sigma/sigma') > 0, variances in units of sigma'^2:

    Phi0 = 1 - e^{-2h}, Phi1 = E_2(-2h)/2, Psi = Phi1 sigma'^2, V1 = Phi0 sigma'^2,
    C12 = e^{-2h} E_2(2h) sigma'^2, V2 = 2 e^{-2h} E_3(2h) sigma'^2,
    B = 2 Psi / V2 -> 3/(4h), w1 = 1/(2B), c = Phi1/(2 h w1) -> 3/4, w0 = Phi0/2 - w1.
    The stage is x~ = e^{-2ch} x + (1 - e^{-2ch}) D + B xi2 at sigma e^{-ch}, the update
    e^{-2h} x + 2 (w0 D + w1 D~) + xi1.
    """
    h = _check_h(h)
    x = 2.0 * h
    Phi0 = -math.expm1(-x)
    Phi1 = 0.5 * exp_tail(2, -x)
    V2 = 2.0 * scaled_exp_tail(3, x)
    B = 2.0 * Phi1 / V2
    w1 = 0.5 / B
    return SRKStep(h, Phi1 / (2.0 * h * w1), 0.5 * Phi0 - w1, w1, B, NoisePair(Phi0, V2, scaled_exp_tail(2, x)))


def _check_h(h: float) -> float:
    """h = log(sigma/sigma') > 0, the log step length."""
    return check_positive(h, "h")


THETA_CUTOFF = 1.5


@dataclass(frozen=True)
class MultistepStep:
    """One step of the multistep SRK (`fastdiff.solvers.srk`), h = log(sigma/sigma') > 0, stage at fraction theta.

    The OU flow dx = 2 (D - x) dlambda keeps e^{-2t} of x over log-length t (`ou_decay`): `decay` = e^{-2h} over the
    step, `stage_decay` = e^{-2 theta h} and `stage_rise` = 1 - e^{-2 theta h} over the stage interval, and
    `noise_carry` = e^{-2(1-theta)h} over the rest. The step's noise is split at theta h into the exact OU noise of the
    stage interval, N (variance `stage_var` sigma^2), and of the rest, R (variance `rest_var` sigma'^2); the step's
    noise is xi1 = noise_carry N + R, so Var xi1 = V1 = `phi0` sigma'^2 with Phi0 = 1 - e^{-2h}, and N, xi1 are
    coupled exactly as the Brownian path couples them. `slope` is Phi0 (1/2 - theta) h: the corrector adds
    slope (D~ - D_prev)/gap.
    """

    h: float
    theta: float
    decay: float
    phi0: float
    stage_decay: float
    stage_rise: float
    stage_var: float
    noise_carry: float
    rest_var: float
    slope: float


def ou_decay(t: float) -> tuple[float, float]:
    """(e^{-2t}, 1 - e^{-2t}): the weights of x and D after log-length t of the OU flow dx = 2 (D - x) dlambda."""
    return math.exp(-2.0 * t), -math.expm1(-2.0 * t)


def stage_fraction(h: float, theta: float) -> float:
    """theta (1 - h / THETA_CUTOFF)^+: the full fraction for small steps, 0 (a step-start evaluation) from h = 1.5 on."""
    return theta * max(0.0, 1.0 - h / THETA_CUTOFF)


def multistep_form(h: float, theta: float) -> MultistepStep:
    """Phi0 = 1 - e^{-2h}; N ~ sigma^2 e^{-2 theta h} (1 - e^{-2 theta h}); R ~ sigma'^2 (1 - e^{-2(1-theta)h})."""
    h = _check_h(h)
    if not 0.0 <= theta < 1.0:
        raise ValueError(f"theta must be in [0, 1), got {theta!r}")
    decay, phi0 = ou_decay(h)
    stage_decay, stage_rise = ou_decay(theta * h)
    noise_carry, rest_var = ou_decay((1.0 - theta) * h)
    return MultistepStep(
        h, theta, decay, phi0, stage_decay, stage_rise, stage_decay * stage_rise, noise_carry, rest_var, phi0 * (0.5 - theta) * h
    )


@dataclass(frozen=True)
class VPStep:
    """A step in VP coordinates y = alpha x, alpha = 1/sqrt(1 + sigma^2): h = log(alpha'/alpha) > 0."""

    h: float
    alpha: float
    alpha_next: float


def vp_step(sigma: float, sigma_next: float) -> VPStep:
    """h = (log(1 + sigma^2) - log(1 + sigma'^2))/2, alpha and alpha' of the step sigma -> sigma'."""
    h = 0.5 * (math.log1p(sigma**2) - math.log1p(sigma_next**2))
    return VPStep(h, 1.0 / math.sqrt(1.0 + sigma**2), 1.0 / math.sqrt(1.0 + sigma_next**2))
