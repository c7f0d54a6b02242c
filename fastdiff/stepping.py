"""The one walk over a grid: every caller of the step rules (`fastdiff.sample`, LD3's differentiable solve, the
diffusers schedulers, SuperDiff's sampler, the demo's NFE counts) drives them through `SolverRun`.

`SolverRun` holds a solver run over the grid `ctx.sigmas` started from x at sigmas[0]. Its pending `request` is
the next `Evaluation(x, sigma)`; `answer(D)` sends D(request.x, request.sigma) in and advances to the next request,
across step boundaries, until the grid is done and `result` holds the final state. A host that owns the model call
(a diffusers pipeline) answers one request per call; `solve` answers them all in a loop. The step to sigma' = 0 is
the denoising step x' = D(x^, sigma^) at the step's start point (`Solver.start`: x itself, or x after EDM churn),
taken here for every solver whose class keeps `denoises_at_zero`. The step from sigma = inf (a grid that starts at the
flow time t = 1) is taken here too: the state there is the unit noise n, and x' = D(n, inf) + sigma' (kept n + fresh z)
with the solver's declared limit (kept, fresh) = `Solver.from_infinity()` (docs/ALGORITHMS.md section 14); the
solver's own steps, and its multistep history, start after it. A step listed in `fresh_steps` runs on a new
instance from `make_solver()`, without the multistep history of the steps before it (diffusers' `solver_order=1`
and `lower_order_final`). `evaluation_plan` is the same walk on a [1, 1] zero state with zero answers and zero
noise: the step rules compute their evaluation sigmas from the grid alone, so it lists them before sampling.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from dataclasses import dataclass

import torch

from fastdiff.noise import NoiseSource
from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, Solver, StepContext, StepOutput

Evaluate = Callable[[torch.Tensor, float], torch.Tensor]


def host_float(value) -> float:
    """A grid point as a host float (grids being learned hold 0-d tensors)."""
    return float(value.detach()) if isinstance(value, torch.Tensor) else float(value)


def denoising_step(solver: Solver, ctx: StepContext, i: int, x: torch.Tensor) -> Generator:
    """The step to sigma' = 0: x' = D(x^, sigma^) with (x^, sigma^) = solver.start(ctx, i, x)."""
    x_hat, sigma_hat = solver.start(ctx, i, x)
    denoised = yield Evaluation(x_hat, sigma_hat)
    yield StepOutput(denoised, denoised, x_hat, sigma_hat)


def infinity_step(solver: Solver, ctx: StepContext, i: int, x: torch.Tensor) -> Generator:
    """The step from sigma = inf, x the unit noise n: x' = D(n, inf) + sigma' (kept n + fresh z), (kept, fresh) =
    solver.from_infinity(); no noise is drawn when fresh = 0 or sigma' = 0 (a grid [inf, 0] is one denoising step)."""
    sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    denoised = yield Evaluation(x, sigma)
    kept, fresh = solver.from_infinity()
    draws_noise = fresh != 0.0 and host_float(sigma_next) != 0.0
    noise = [(sigma_next * fresh, ctx.draw(i))] if draws_noise else []
    x_next = solver_step(x, [denoised], sigma_next * kept, [1.0], noise=noise, backend=ctx.backend)
    yield StepOutput(x_next, denoised, x, sigma)


def step_items(solver: Solver, ctx: StepContext, i: int, x: torch.Tensor) -> Generator:
    """The generator of step i: the loop's step from sigma = inf or its denoising step to sigma' = 0, else the
    solver's own."""
    if math.isinf(host_float(ctx.sigmas[i])):
        return infinity_step(solver, ctx, i, x)
    if solver.denoises_at_zero and host_float(ctx.sigmas[i + 1]) == 0.0:
        return denoising_step(solver, ctx, i, x)
    return solver.step(ctx, i, x)


class SolverRun:
    """The pending evaluation of a solver run over `ctx.sigmas`, from x at sigmas[0] (see the module docstring)."""

    def __init__(
        self,
        solver: Solver,
        ctx: StepContext,
        x: torch.Tensor,
        fresh_steps: frozenset[int] = frozenset(),
        make_solver: Callable[[], Solver] | None = None,
    ):
        if fresh_steps and make_solver is None:
            raise ValueError("fresh_steps needs make_solver")
        self.solver = solver
        self.ctx = ctx
        self.fresh_steps = fresh_steps
        self.make_solver = make_solver
        self.n_steps = len(ctx.sigmas) - 1
        self.step_index = 0
        self.request: Evaluation | None = None
        self.result: torch.Tensor | None = None
        self._begin_step(x)

    @property
    def done(self) -> bool:
        return self.request is None

    @property
    def at_step_start(self) -> bool:
        """True when the pending request is the current step's first and asks for D at the step's own input."""
        return self.request is not None and self._answered == 0 and self.request.x is self._input

    def answer(self, denoised: torch.Tensor) -> StepOutput | None:
        """Send D for the pending request and advance to the next request (or finish); returns the step's
        `StepOutput` when this answer completed a step, else None."""
        if self.request is None:
            raise RuntimeError("the solver run is finished; there is no pending evaluation to answer")
        self._answered += 1
        item = self._steps.send(denoised)
        if isinstance(item, Evaluation):
            self.request = item
            return None
        self._steps.close()  # the step yielded its StepOutput, its last item
        self.step_index += 1
        if self.step_index == self.n_steps:
            self.request, self.result = None, item.x_next
        else:
            self._begin_step(item.x_next)
        return item

    def restart_step(self, x: torch.Tensor) -> None:
        """Start the current step again from a new input x; only before any of its evaluations was answered (a step
        rule changes its history only after it received an answer, so nothing is lost)."""
        if not self.at_step_start:
            raise RuntimeError("a step can only be restarted before its first evaluation is answered")
        self._steps.close()
        self._begin_step(x)

    def _begin_step(self, x: torch.Tensor) -> None:
        if self.step_index in self.fresh_steps:
            self.solver = self.make_solver()
        self._input = x
        self._answered = 0
        self._steps = step_items(self.solver, self.ctx, self.step_index, x)
        self.request = self._steps.send(None)


def solve(
    solver: Solver,
    ctx: StepContext,
    x: torch.Tensor,
    evaluate: Evaluate,
    on_step: Callable[[int, StepOutput], None] | None = None,
) -> torch.Tensor:
    """Run `solver` down `ctx.sigmas` from x, answering every request with `evaluate(x, sigma)`; `on_step(i, output)`
    is called as step i completes. Returns the state at sigmas[-1]."""
    run = SolverRun(solver, ctx, x)
    while not run.done:
        i = run.step_index
        finished = run.answer(evaluate(run.request.x, run.request.sigma))
        if finished is not None and on_step is not None:
            on_step(i, finished)
    return run.result


class _ZeroNoise(NoiseSource):
    def draw(self, like, step, stage, sigma=None, sigma_next=None):
        return torch.zeros_like(like)


@dataclass(frozen=True)
class EvaluationPlan:
    """Where a solver evaluates the model on a grid: `sigmas[e]` is evaluation e, `steps[e]` the step it belongs to;
    `starts_at_input`: the first request is D(x, sigmas[0]) at the run's own input."""

    grid: tuple[float, ...]
    sigmas: tuple[float, ...]
    steps: tuple[int, ...]
    starts_at_input: bool

    @property
    def max_per_step(self) -> int:
        return max(self.steps.count(i) for i in set(self.steps))

    def grid_from(self, e: int) -> list[float]:
        """The grid of a run that starts at evaluation e: its sigma, then the rest of e's step and the later steps."""
        return [self.sigmas[e], *self.grid[self.steps[e] + 1 :]]


def evaluation_plan(
    make_solver: Callable[[], Solver], grid: list[float], fresh_steps: frozenset[int] = frozenset()
) -> EvaluationPlan:
    """The evaluation sigmas of the solver `make_solver()` on `grid`, by a dry run of the walk."""
    ctx = StepContext(
        sigmas=list(grid), sigmas_tensor=torch.tensor(grid, dtype=torch.float64), noise=_ZeroNoise(), backend="reference"
    )
    run = SolverRun(make_solver(), ctx, torch.zeros(1, 1, dtype=torch.float64), fresh_steps, make_solver)
    starts_at_input = run.at_step_start and run.request.sigma == grid[0]
    sigmas, steps = [], []
    while not run.done:
        sigmas.append(run.request.sigma)
        steps.append(run.step_index)
        run.answer(torch.zeros_like(run.request.x))
    return EvaluationPlan(tuple(grid), tuple(sigmas), tuple(steps), starts_at_input)
