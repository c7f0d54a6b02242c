"""UniPC, the unified predictor-corrector multistep solver in data prediction (Zhao et al. 2023, arXiv 2302.04867,
Alg. 2 and 3, B(h) variants), as diffusers' UniPCMultistepScheduler runs it (docs/ALGORITHMS.md section 17).

With lambda = -log sigma, h = lambda_{i+1} - lambda_i, r_k = (lambda_{i-k} - lambda_i)/h and D1_k = (D_{i-k} - D_i)/r_k:
  UniP-p:  x~_{i+1} = (sigma_{i+1}/sigma_i) x_i - expm1(-h) D_i - B(h) sum_{k<p} rho^p_k D1_k,
  UniC-p:  x_{i+1}  = (sigma_{i+1}/sigma_i) x_i - expm1(-h) D_i - B(h) (sum_{k<p} rho^c_k D1_k + rho^c_p (D_{i+1} - D_i)),
D_{i+1} = D(x~_{i+1}, sigma_{i+1}) being the next step's evaluation, so NFE = steps; B(h) = -h ("bh1") or expm1(-h)
("bh2"); rho^c solves R rho = g and rho^p the same system without its last row and column (rho^p = 1/2 at p = 2,
rho^c = 1/2 at p = 1), R_jk = r_k^(j-1) (r_p = 1) and g_j = j! z phi_{j+1}(z) / B(h) with z = -h.
The corrector of step i runs at the start of step i + 1, after its evaluation; no corrector follows the last step.
The order p of step i is min(solver_order, i + 1) (warm-up) and, with `lower_order_final`, at most N - i on N steps.
The step to sigma' = 0 is the loop's denoising step x' = D, which is diffusers' order-1 step there; without
`lower_order_final` diffusers' higher-order step to 0 divides by r_k = 0 (non-finite), fastdiff takes x' = D there too.
ComfyUI's `uni_pc` (`solver_type="bh1"`) and `uni_pc_bh2` are this solver with solver_order 3 and lower_order_final on a
grid whose final 0 is replaced by 0.001 (they return x there, no denoising step).
"""

from __future__ import annotations

import math

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, Solver, StepOutput
from fastdiff.validation import check_flag, check_int_in

MAX_SOLVER_ORDER = 3
SOLVER_TYPES = ("bh1", "bh2")


def solve_linear(matrix: list[list[float]], rhs: list[float]) -> list[float]:
    """The solution of matrix @ v = rhs by Gaussian elimination with partial pivoting (host floats, n <= 3)."""
    n = len(rhs)
    a = [[*row, value] for row, value in zip(matrix, rhs, strict=True)]
    for col in range(n):
        pivot = max(range(col, n), key=lambda r: abs(a[r][col]))
        a[col], a[pivot] = a[pivot], a[col]
        for r in range(col + 1, n):
            f = a[r][col] / a[col][col]
            a[r] = [v - f * p for v, p in zip(a[r], a[col], strict=True)]
    v = [0.0] * n
    for r in reversed(range(n)):
        v[r] = (a[r][n] - sum(a[r][c] * v[c] for c in range(r + 1, n))) / a[r][r]
    return v


def rhs(h: float, order: int, b_h: float) -> list[float]:
    """g_j = j! z phi_{j+1}(z) / B(h), j = 1..order, z = -h, phi_1(z) = expm1(z)/z, phi_{k+1}(z) = (phi_k(z) - 1/k!)/z
    (the paper's Alg. 2 in data prediction)."""
    hh = -h
    phi = math.expm1(hh) / hh - 1.0  # z phi_2(z), then z phi_{j+1}(z)
    g, factorial = [], 1.0
    for j in range(1, order + 1):
        g.append(phi * factorial / b_h)
        factorial *= j + 1
        phi = phi / hh - 1.0 / factorial
    return g


class UniPC(Solver):
    name = "unipc"
    evaluations_per_step = 1

    def __init__(
        self,
        solver_order: int = 3,
        solver_type: str = "bh2",
        lower_order_final: bool = True,
        disable_corrector: list[int] | tuple[int, ...] = (),
    ):
        check_int_in(solver_order, "solver_order", 1, MAX_SOLVER_ORDER)
        if solver_type not in SOLVER_TYPES:
            raise ValueError(f"solver_type must be one of {SOLVER_TYPES}, got {solver_type!r}")
        check_flag(lower_order_final, "lower_order_final")
        if not isinstance(disable_corrector, list | tuple | set | frozenset) or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in disable_corrector
        ):
            raise ValueError(f"disable_corrector must be a list of step indices (ints >= 0), got {disable_corrector!r}")
        self.solver_order = solver_order
        self.solver_type = solver_type
        self.lower_order_final = lower_order_final
        self.disable_corrector = frozenset(disable_corrector)
        # Measured global order: the warm-up's first step (UniP-1 + UniC-1) is second order locally (O(h^3)), and with
        # lower_order_final (or no corrector after step 0, or solver_order = 1) an uncorrected Euler step remains.
        third = solver_order >= 2 and not lower_order_final and 0 not in self.disable_corrector
        self.order = 3 if third else 2
        self.history: list[tuple] = []  # (D, sigma) of the latest steps, newest first
        self.pending = None  # (step, x, order) of the last predictor, which the next evaluation corrects

    def b_h(self, h: float) -> float:
        return -h if self.solver_type == "bh1" else math.expm1(-h)

    def update(self, ctx, x, points, sigma_next, order, corrector_denoised=None):
        """UniP-order from x at points[0]'s sigma to sigma_next, or UniC-order with D(x~, sigma_next) given."""
        denoised, sigma = points[0]
        h = math.log(sigma / sigma_next)
        b_h = self.b_h(h)
        ratios = [math.log(sigma / s_k) / h for _, s_k in points[1:order]]
        g = rhs(h, order, b_h)
        matrix = [[r ** (j - 1) for r in [*ratios, 1.0]] for j in range(1, order + 1)]
        if corrector_denoised is not None:
            rhos = [0.5] if order == 1 else solve_linear(matrix, g)
        elif order <= 2:
            rhos = [0.5] * (order - 1)
        else:
            rhos = solve_linear([row[:-1] for row in matrix[:-1]], g[:-1])
        ks, bs = [denoised], [-math.expm1(-h)]
        for rho, r, (d_k, _) in zip(rhos, ratios, points[1:order], strict=False):
            ks.append(d_k)
            bs.append(-b_h * rho / r)
            bs[0] += b_h * rho / r
        if corrector_denoised is not None:
            ks.append(corrector_denoised)
            bs.append(-b_h * rhos[-1])
            bs[0] += b_h * rhos[-1]
        return solver_step(x, ks, sigma_next / sigma, bs, backend=ctx.backend)

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = yield Evaluation(x, sigma)
        x_eval = x
        if self.pending is not None and self.pending[0] == i - 1 and i - 1 not in self.disable_corrector:
            _, x_last, last_order = self.pending
            x = self.update(ctx, x_last, self.history, sigma, last_order, corrector_denoised=denoised)
        points = [(denoised, sigma), *self.history][: self.solver_order]
        order = min(self.solver_order, len(points))
        if self.lower_order_final:
            order = min(order, len(ctx.sigmas) - 1 - i)
        x_next = self.update(ctx, x, points, sigma_next, order)
        self.history = points
        self.pending = (i, x, order)
        yield StepOutput(x_next, denoised, x_eval, sigma)
