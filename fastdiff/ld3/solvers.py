"""The solver side of LD3: which step rules can learn a grid, their full options, and NFE -> steps.

A schedule is tied to (solver, options, NFE). NFE counts network evaluations; the grid runs from sigma_max to
sigma_min, and with `to_zero` appends a final step to 0. Steps per NFE are found by a dry run of the step rule
(the most steps whose evaluations fit the budget):

| solver | grid ends at sigma_min (default) | grid ends with 0 (`to_zero=True`) |
|---|---|---|
| euler, dpmpp_2m, ipndm | NFE steps, NFE + 1 levels | NFE steps, NFE levels + 0 |
| heun | floor(NFE / 2) steps (2 evaluations each) | floor((NFE + 1) / 2) steps (the step to 0 costs 1) |
"""

from __future__ import annotations

import inspect
import math

from fastdiff.solvers import SOLVERS, make_solver
from fastdiff.stepping import evaluation_plan
from fastdiff.validation import check_positive_int


def learnable_solvers() -> tuple[str, ...]:
    """Names of the step rules that accept a differentiable grid (class attribute `learnable_schedule`)."""
    return tuple(sorted(name for name, cls in SOLVERS.items() if getattr(cls, "learnable_schedule", False)))


def resolve_solver(solver: object, options: dict | None = None) -> dict:
    """Every constructor option of `solver` (defaults filled in), after checking that LD3 can learn its grid.
    Two option sets give the same solver exactly when their resolved dicts are equal."""
    if not isinstance(solver, str):
        raise TypeError(f"solver must be a solver name (str), got {type(solver).__name__}")
    options = dict(options or {})
    rule = make_solver(solver, **options)  # unknown solver or option: raises, naming it
    if not getattr(rule, "learnable_schedule", False):
        raise ValueError(f"solver {solver!r} does not support learned schedules; LD3 supports: {', '.join(learnable_solvers())}")
    if rule.stochastic:
        raise ValueError(
            f"LD3 learns grids for the deterministic (ODE) form of {solver!r}; got stochastic options {options} (set s_churn=0)"
        )
    init = SOLVERS[solver].__init__
    params = {} if init is object.__init__ else inspect.signature(init).parameters
    full = {n: p.default for n, p in params.items() if n != "self" and p.default is not inspect.Parameter.empty}
    full.update(options)
    return full


def count_evaluations(solver: str, options: dict, steps: int, to_zero: bool) -> int:
    """Network evaluations of `solver` on a grid of `steps` steps (a dry run of the walk, `fastdiff.stepping.evaluation_plan`)."""
    levels = steps if to_zero else steps + 1
    grid = [math.exp(-k) for k in range(levels)] + ([0.0] if to_zero else [])
    return len(evaluation_plan(lambda: make_solver(solver, **options), grid).sigmas)


def steps_for_nfe(solver: str, options: dict, nfe: int, to_zero: bool) -> tuple[int, int]:
    """(steps, evaluations): the most steps of `solver` whose evaluations fit `nfe`."""
    check_positive_int(nfe, "nfe")
    # evaluations grow with the steps, so bisect for the most steps that fit (a linear scan is O(nfe^2) dry steps)
    fits, used = 0, 0
    too_many = nfe + 1
    while too_many - fits > 1:
        steps = (fits + too_many) // 2
        count = count_evaluations(solver, options, steps, to_zero)
        if count <= nfe:
            fits, used = steps, count
        else:
            too_many = steps
    if fits == 0:
        one = count_evaluations(solver, options, 1, to_zero)
        raise ValueError(f"nfe={nfe} is too small for {solver!r}: one step costs {one} evaluations")
    return fits, used


def minimal_options(solver: str, options: dict | None) -> dict:
    """The options of `solver` that differ from its defaults (what a schedule file stores)."""
    full, defaults = resolve_solver(solver, options), resolve_solver(solver)
    return {k: v for k, v in full.items() if defaults.get(k) != v}
