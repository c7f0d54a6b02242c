"""SA-Solver, the stochastic Adams predictor-corrector (Xue et al. 2023, "SA-Solver: Stochastic Adams Solver for Fast
Sampling of Diffusion Models", arXiv 2309.05019; ComfyUI's `sample_sa_solver` / `sample_sa_solver_pece`), VE data
prediction (docs/ALGORITHMS.md section 20).

With lambda = -log sigma, h = lambda' - lambda, tau = tau(sigma') and kappa = 1 + tau^2, the predictor of order p is
  x~' = (sigma'/sigma) e^{-tau^2 h} x + sum_j b_j D_j + s_noise sigma' sqrt(1 - e^{-2 tau^2 h}) z,
  b_j = kappa int_lambda^lambda' e^{-kappa (lambda' - u)} l_j(u) du,
l_j the Lagrange basis through the last p points (lambda_j, D_j) (extrapolated over the step). The corrector of order
c takes the same step from x again once D' = D(x~', sigma') is known, with the basis through the last c points, D'
included, and the same z: x' = x~' + sum_j (b^c_j - b^p_j) D_j. `use_pece` evaluates D again at the corrected x' and
replaces D' by it (two evaluations per step). The first own step has no corrector; with `simple_order_2` the two-point
bases are the paper's Appendix D forms (predictor b_{-1} = -kappa h^2 / (2 h_prev), corrector b' = kappa h / 2, the
other weight 1 - e^{-kappa h} minus it). tau(sigma') = eta on sde_end_sigma <= sigma' <= sde_start_sigma, else 0
(an ODE step). On a grid that ends at 0 the orders are lowered near the end (predictor <= N - 1 - i, corrector
<= N - i, N steps) and the step to 0 is x' = D after the corrector (without `use_pece` no corrector runs on it:
x' = D(x~)). From sigma = inf the loop takes `from_infinity`'s step and the history starts after it.
"""

from __future__ import annotations

import math

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, Solver, StepOutput
from fastdiff.validation import check_flag, check_int_in, check_number

MAX_ORDER = 6  # ComfyUI's SamplerSASolver widget bounds: predictor 1-6, corrector 0-6
# ComfyUI's defaults read the interval from the model, percent_to_sigma(0.2) and (0.8); for an EDM model on
# [0.002, 80] these are sigma_min^0.2 sigma_max^0.8 and sigma_min^0.8 sigma_max^0.2.
SDE_START_SIGMA = math.exp(0.8 * (math.log(80.0) - math.log(0.002)) + math.log(0.002))  # 9.6012...
SDE_END_SIGMA = math.exp(0.2 * (math.log(80.0) - math.log(0.002)) + math.log(0.002))  # 0.016652...


def exponential_moments(h: float, kappa: float, count: int) -> list[float]:
    """J_m = kappa int_{-h}^0 e^{kappa v} v^m dv, m < count, by parts: J_0 = 1 - e^{-kappa h},
    J_m = -(-h)^m e^{-kappa h} - (m / kappa) J_{m-1}."""
    decay = math.exp(-kappa * h)
    moments = [-math.expm1(-kappa * h)]
    for m in range(1, count):
        moments.append(-((-h) ** m) * decay - m / kappa * moments[-1])
    return moments


def adams_weights(nodes: list[float], h: float, kappa: float) -> list[float]:
    """b_j = kappa int_{-h}^0 e^{kappa v} l_j(v) dv for the Lagrange basis l_j through `nodes` (lambda - lambda')."""
    moments = exponential_moments(h, kappa, len(nodes))
    weights = []
    for j, v_j in enumerate(nodes):
        poly, scale = [1.0], 1.0  # monomial coefficients of prod_{k != j} (v - v_k), lowest first
        for k, v_k in enumerate(nodes):
            if k != j:
                poly = [(poly[m - 1] if m > 0 else 0.0) - v_k * (poly[m] if m < len(poly) else 0.0) for m in range(len(poly) + 1)]
                scale *= v_j - v_k
        weights.append(sum(c * mu for c, mu in zip(poly, moments, strict=True)) / scale)
    return weights


class SASolver(Solver):
    """Weak order 2 (KL slopes about -4 over 32..128 steps with noise on the default interval or on all of it,
    tests/test_sa_solver.py), 1 where the corrector has one point or neither step has two. (Measured, not declared:
    predictor_order = corrector_order = 2 fits weak order 3 there, and the ODE step eta = 0 is near order 4 by default.)"""

    name = "sa_solver"
    stochastic = True  # the defaults draw noise; the instance says for its options
    denoises_at_zero = False  # with use_pece the step to 0 corrects and evaluates again before x' = D

    def __init__(
        self,
        eta: float = 1.0,
        s_noise: float = 1.0,
        predictor_order: int = 3,
        corrector_order: int = 4,
        use_pece: bool = False,
        simple_order_2: bool = False,
        sde_start_sigma: float = SDE_START_SIGMA,
        sde_end_sigma: float = SDE_END_SIGMA,
    ):
        check_int_in(predictor_order, "predictor_order", 1, MAX_ORDER)
        check_int_in(corrector_order, "corrector_order", 0, MAX_ORDER)
        self.eta = check_number(eta, "eta")
        self.s_noise = check_number(s_noise, "s_noise")
        self.sde_start_sigma = check_number(sde_start_sigma, "sde_start_sigma", allow_inf=True)
        self.sde_end_sigma = check_number(sde_end_sigma, "sde_end_sigma")  # above sde_start_sigma: no SDE step
        self.predictor_order = predictor_order
        self.corrector_order = corrector_order
        self.use_pece = check_flag(use_pece, "use_pece")
        self.simple_order_2 = check_flag(simple_order_2, "simple_order_2")
        self.order = 1 if corrector_order == 1 or max(predictor_order, corrector_order) == 1 else 2
        self.evaluations_per_step = 2 if use_pece and corrector_order > 0 else 1
        self.stochastic = self.eta > 0.0 and self.s_noise > 0.0 and self.sde_end_sigma <= self.sde_start_sigma
        self.history: list[tuple] = []  # (D, lambda) of the latest steps, oldest first
        # ([(D_j, b^p_j)], lambda, tau) of the last predictor, whose D-terms this step's corrector replaces
        self.pending: tuple | None = None

    def from_infinity(self) -> tuple[float, float]:
        """The first step is the order-1 predictor: (sigma'/sigma) e^{-tau^2 h} x = sigma' (sigma'/sigma)^{tau^2} n -> 0
        (slowly for small tau) and the noise -> s_noise sigma' z as h -> inf where tau(sigma') = eta > 0: (0, s_noise);
        eta = 0 or an empty interval, (1, 0). (A first sigma' outside a non-empty interval has tau = 0 there: the path
        differs, the law not, D(n, inf) being constant.)"""
        noisy = self.eta > 0.0 and self.sde_end_sigma <= self.sde_start_sigma
        return (0.0, self.s_noise) if noisy else (1.0, 0.0)

    def tau(self, sigma: float) -> float:
        return self.eta if self.sde_end_sigma <= sigma <= self.sde_start_sigma else 0.0

    def weights(self, points: list[tuple], lam: float, lam_next: float, tau: float, corrector: bool) -> list[float]:
        """b_j of the step from lam to lam_next for the (D_j, lambda_j) in `points`, oldest first."""
        h, kappa = lam_next - lam, 1.0 + tau * tau
        if not (self.simple_order_2 and len(points) == 2):
            return adams_weights([p[1] - lam_next for p in points], h, kappa)
        total = -math.expm1(-kappa * h)
        if corrector:  # the newest point is the step's end
            return [total - 0.5 * kappa * h, 0.5 * kappa * h]
        oldest = 0.5 * kappa * h * h / (points[0][1] - lam)
        return [oldest, total - oldest]

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = yield Evaluation(x, sigma)
        x_eval, lam = x, -math.log(sigma)
        self.history = [*self.history, (denoised, lam)][-max(self.predictor_order, self.corrector_order) :]
        steps = len(ctx.sigmas) - 1
        to_end = float(ctx.sigmas[-1]) == 0.0  # orders are lowered near the end of a grid to 0
        corrector = 0
        if self.pending is not None and (sigma_next > 0.0 or self.use_pece):
            corrector = min(self.corrector_order, len(self.history), steps - i if to_end else MAX_ORDER)
        if corrector:
            terms, lam_prev, tau_prev = self.pending
            points = self.history[-corrector:]
            b_c = self.weights(points, lam_prev, lam, tau_prev, corrector=True)
            ks = [p[0] for p in points] + [d for d, _ in terms]
            x = solver_step(x, ks, 1.0, b_c + [-b for _, b in terms], backend=ctx.backend)
            if self.use_pece:
                denoised = yield Evaluation(x, sigma)
                self.history[-1] = (denoised, lam)
        x_next = denoised
        if sigma_next > 0.0:
            predictor = min(self.predictor_order, len(self.history), steps - 1 - i if to_end else MAX_ORDER)
            tau, lam_next = self.tau(sigma_next), -math.log(sigma_next)
            h = lam_next - lam
            points = self.history[-predictor:]
            b_p = self.weights(points, lam, lam_next, tau, corrector=False)
            noise = []
            if tau > 0.0 and self.s_noise > 0.0:
                noise = [(self.s_noise * sigma_next * math.sqrt(-math.expm1(-2.0 * tau * tau * h)), ctx.draw(i))]
            a = sigma_next / sigma * math.exp(-tau * tau * h)
            x_next = solver_step(x, [p[0] for p in points], a, b_p, noise=noise, backend=ctx.backend)
            self.pending = ([(p[0], b) for p, b in zip(points, b_p, strict=True)], lam, tau)
        yield StepOutput(x_next, denoised, x_eval, sigma)


class SASolverPECE(SASolver):
    """SA-Solver in PECE mode (`use_pece`): the corrected state is evaluated again (ComfyUI's `sample_sa_solver_pece`)."""

    name = "sa_solver_pece"

    def __init__(
        self,
        eta: float = 1.0,
        s_noise: float = 1.0,
        predictor_order: int = 3,
        corrector_order: int = 4,
        simple_order_2: bool = False,
        sde_start_sigma: float = SDE_START_SIGMA,
        sde_end_sigma: float = SDE_END_SIGMA,
    ):
        super().__init__(eta, s_noise, predictor_order, corrector_order, True, simple_order_2, sde_start_sigma, sde_end_sigma)
