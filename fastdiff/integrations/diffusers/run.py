"""A solver run driven from outside, one network evaluation per call: the loop of `fastdiff.driver` turned inside out,
for hosts such as a diffusers pipeline that own the model call.

A step rule (`fastdiff.solvers`) is a generator that yields `Evaluation(x, sigma)` requests and then its
`StepOutput`. `SolverRun` keeps the running generator between calls: `request` is the pending evaluation, `answer(D)`
sends D(request.x, request.sigma) in and advances to the next request, across step boundaries, until the grid is
done and `result` holds the final state. A step listed in `fresh_steps` runs on a new instance of the step rule,
without the multistep history of the steps before it (how diffusers' `solver_order=1` and `lower_order_final` drop
DPM-Solver++'s second-order correction). `evaluation_plan` is the same run on a [1, 1] dummy state with zero
denoiser and zero noise: solvers compute their evaluation sigmas from the grid alone, so it lists them before
sampling starts (what a diffusers pipeline needs as `scheduler.timesteps`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fastdiff.noise import NoiseSource
from fastdiff.solvers import Evaluation, Solver, StepContext, make_solver


class SolverRun:
    """The pending evaluation of a solver run over the grid `ctx.sigmas`, started from x at sigmas[0]; the steps in
    `fresh_steps` start a new solver from `make_solver()`."""

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

    def answer(self, denoised: torch.Tensor) -> None:
        """Send D for the pending request; advance to the next request (or finish)."""
        if self.request is None:
            raise RuntimeError("the solver run is finished; there is no pending evaluation to answer")
        self._answered += 1
        self._advance(denoised)

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
        self._steps = self.solver.step(self.ctx, self.step_index, x)
        self._advance(None)

    def _advance(self, answer: torch.Tensor | None) -> None:
        item = self._steps.send(answer)
        if isinstance(item, Evaluation):
            self.request = item
            return
        self._steps.close()  # the step yielded its StepOutput, its last item
        self.step_index += 1
        if self.step_index == self.n_steps:
            self.request, self.result = None, item.x_next
        else:
            self._begin_step(item.x_next)


class _ZeroNoise(NoiseSource):
    def draw(self, like, step, stage, sigma=None, sigma_next=None):
        return torch.zeros_like(like)


@dataclass(frozen=True)
class EvaluationPlan:
    """Where a solver evaluates the model on a grid: `sigmas[e]` is evaluation e, `steps[e]` the step it belongs to."""

    grid: tuple[float, ...]
    sigmas: tuple[float, ...]
    steps: tuple[int, ...]

    @property
    def max_per_step(self) -> int:
        return max(self.steps.count(i) for i in set(self.steps))

    def grid_from(self, e: int) -> list[float]:
        """The grid of a run that starts at evaluation e: its sigma, then the rest of e's step and the later steps."""
        return [self.sigmas[e], *self.grid[self.steps[e] + 1 :]]


def evaluation_plan(
    solver: str, options: dict, grid: list[float], fresh_steps: frozenset[int] = frozenset()
) -> EvaluationPlan:
    """The evaluation sigmas of `solver` with `options` on `grid`, by a dry run of its step generators.

    Raises when the solver's first request is not D(x, sigmas[0]) at its own input: a pipeline evaluates the model
    on the sample it holds, so a run must start there."""
    rule = make_solver(solver, **options)
    ctx = StepContext(
        sigmas=list(grid), sigmas_tensor=torch.tensor(grid, dtype=torch.float64), noise=_ZeroNoise(), backend="reference"
    )
    run = SolverRun(rule, ctx, torch.zeros(1, 1, dtype=torch.float64), fresh_steps, lambda: make_solver(solver, **options))
    if not run.at_step_start or run.request.sigma != grid[0]:
        raise ValueError(
            f"solver {solver!r} with options {options} does not first evaluate D at its input (x, sigmas[0]), where a "
            "diffusers pipeline evaluates the model on the sample it holds (EDM churn on the first step does that: "
            "keep sigmas[0] above s_tmax)"
        )
    sigmas, steps = [], []
    while not run.done:
        sigmas.append(run.request.sigma)
        steps.append(run.step_index)
        run.answer(torch.zeros_like(run.request.x))
    return EvaluationPlan(tuple(grid), tuple(sigmas), tuple(steps))
