"""What every step rule declares about itself (`Solver.order`, `Solver.evaluations_per_step`, `denoises_at_zero`)
against a dry run of the walk (`fastdiff.stepping.evaluation_plan`). The declared orders are checked by the fits in
tests/test_ode_order.py (ODE order) and tests/test_srk.py (weak order), which read them from the solvers."""

from __future__ import annotations

import pytest

import fastdiff
from fastdiff.solvers import make_solver
from fastdiff.stepping import evaluation_plan

# Every solver with its defaults, and the options that change a count or the path a step takes.
VARIANTS = [(name, {}) for name in sorted(fastdiff.SOLVERS)] + [
    ("euler", {"s_churn": 10.0}),
    ("heun", {"s_churn": 10.0}),
    ("heun", {"s_churn": 10.0, "s_tmin": 0.1, "s_tmax": 5.0}),
    ("ipndm", {"max_order": 1}),
    ("ipndm", {"max_order": 2}),
    ("euler_ancestral", {"eta": 0.0}),
    ("dpmpp_2m_sde", {"eta": 0.0}),
    ("dpmpp_3m_sde", {"eta": 0.0}),
    ("srk", {"theta": 0.0}),
    ("srk", {"coupled": False}),
    ("srk_dp", {"coupled": False}),
    ("srk_score", {"coupled": False}),
    ("sa_solver", {"use_pece": True}),
    ("sa_solver_pece", {"corrector_order": 0}),
    ("sa_solver", {"sde_start_sigma": 1.0, "sde_end_sigma": 2.0}),
]


def first_step_count(name: str, options: dict, per_step: int) -> int:
    """Evaluations of the first own step: SA-Solver's PECE takes one there (no corrector before any predictor)."""
    if name == "sa_solver_pece" or (name == "sa_solver" and options.get("use_pece")):
        return min(per_step, 1)
    return per_step


IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in opts.items()) or 'defaults'}" for name, opts in VARIANTS]
# Ending at sigma_min > 0; "logsnr" has h = 2.3 per step, where srk's stage falls back to the step start.
GRIDS = {
    "karras": fastdiff.get_sigmas("karras", 7, 0.01, 20.0)[:-1].tolist(),
    "logsnr": fastdiff.get_sigmas("logsnr", 4, 0.01, 20.0)[:-1].tolist(),
}


@pytest.mark.parametrize("name, options", VARIANTS, ids=IDS)
def test_declarations_are_positive_ints(name, options):
    solver = make_solver(name, **options)
    for attribute in ("order", "evaluations_per_step"):
        value = getattr(solver, attribute)
        assert isinstance(value, int) and not isinstance(value, bool) and value >= 1, f"{name}.{attribute} = {value!r}"


@pytest.mark.parametrize("grid", GRIDS)
@pytest.mark.parametrize("name, options", VARIANTS, ids=IDS)
def test_evaluations_per_step_is_the_dry_run_count(name, options, grid):
    sigmas = GRIDS[grid]
    plan = evaluation_plan(lambda: make_solver(name, **options), sigmas)
    per_step = make_solver(name, **options).evaluations_per_step
    expected = [first_step_count(name, options, per_step)] + [per_step] * (len(sigmas) - 2)
    assert [plan.steps.count(i) for i in range(len(sigmas) - 1)] == expected


@pytest.mark.parametrize("name, options", VARIANTS, ids=IDS)
def test_step_to_zero_is_one_evaluation_where_the_loop_denoises(name, options):
    sigmas = [*GRIDS["karras"], 0.0]
    solver = make_solver(name, **options)
    plan = evaluation_plan(lambda: make_solver(name, **options), sigmas)
    last = len(sigmas) - 2
    expected = 1 if solver.denoises_at_zero else solver.evaluations_per_step
    first = first_step_count(name, options, solver.evaluations_per_step)
    assert [plan.steps.count(i) for i in range(last)] == [first] + [solver.evaluations_per_step] * (last - 1)
    assert plan.steps.count(last) == expected
    assert all(s > 0.0 for s in plan.sigmas)


@pytest.mark.parametrize("name, options", VARIANTS, ids=IDS)
def test_step_from_infinity_declaration(name, options):
    """(kept, fresh) of the step from sigma = inf: finite, kept in [0, 1], no fresh noise from a rule that draws none;
    the dry run takes it as one evaluation at inf (tests/test_flow.py checks it is the limit of the rule's own step)."""
    solver = make_solver(name, **options)
    kept, fresh = solver.from_infinity()
    assert isinstance(kept, float) and isinstance(fresh, float) and 0.0 <= kept <= 1.0 and fresh >= 0.0
    assert solver.stochastic or fresh == 0.0
    plan = evaluation_plan(lambda: make_solver(name, **options), [float("inf"), *GRIDS["karras"]])
    assert plan.sigmas[0] == float("inf") and plan.steps.count(0) == 1
