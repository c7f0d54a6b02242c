"""The one walk over a grid (`fastdiff.stepping`): the inverted run equals the loop, restarts, fresh steps, the
denoising step to 0, the dry-run plan, and the loop under torch.compile."""

from __future__ import annotations

import pytest
import torch

import fastdiff
from fastdiff.models import FlowDenoiser
from fastdiff.ops.philox import CounterNoise
from fastdiff.solvers import SOLVERS, StepContext, make_solver
from fastdiff.stepping import SolverRun, evaluation_plan, solve
from fastdiff.toy import GaussianMixture

MIXTURE = GaussianMixture.ring(4, radius=2.0, std=0.5)
GRID = fastdiff.get_sigmas("karras", 6, 0.01, 20.0).tolist()


def denoiser(x, sigma):
    return MIXTURE.denoiser(x, sigma).to(x.dtype)


def context(grid=GRID, batch=3, seed=5):
    return StepContext(
        sigmas=list(grid),
        sigmas_tensor=torch.tensor(grid, dtype=torch.float64),
        noise=CounterNoise.from_seed(seed, batch, torch.device("cpu"), "reference"),
        backend="reference",
    )


def start(batch=3, scale=GRID[0]):
    return torch.randn(batch, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * scale


def answer_one_at_a_time(run: SolverRun) -> torch.Tensor:
    while not run.done:
        run.answer(denoiser(run.request.x, run.request.sigma))
    return run.result


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_run_answered_one_request_at_a_time_is_solve(name):
    x = start()
    looped = solve(make_solver(name), context(), x, denoiser)
    inverted = answer_one_at_a_time(SolverRun(make_solver(name), context(), x))
    assert torch.equal(looped, inverted)


def test_answer_returns_the_step_output_when_a_step_completes():
    run = SolverRun(make_solver("heun"), context(), start())
    outputs = []
    while not run.done:
        outputs.append(run.answer(denoiser(run.request.x, run.request.sigma)))
    finished = [out for out in outputs if out is not None]
    assert len(finished) == len(GRID) - 1 and torch.equal(finished[-1].x_next, run.result)
    assert outputs[:2] == [None, finished[0]]  # heun: two evaluations in a step above 0
    with pytest.raises(RuntimeError, match="the solver run is finished"):
        run.answer(run.result)


@pytest.mark.parametrize("name", ["heun", "dpmpp_2m", "srk"])
def test_restart_step_starts_the_step_again_from_the_new_input(name):
    x, other = start(), start() * 0.5
    run = SolverRun(make_solver(name), context(), x)
    assert run.at_step_start
    run.restart_step(other)
    assert torch.equal(answer_one_at_a_time(run), solve(make_solver(name), context(), other, denoiser))
    # inside the walk, restarting a step from its own input changes nothing
    run = SolverRun(make_solver(name), context(), x)
    while run.step_index < 3:
        run.answer(denoiser(run.request.x, run.request.sigma))
    run.restart_step(run.request.x)
    assert torch.equal(answer_one_at_a_time(run), solve(make_solver(name), context(), x, denoiser))


def test_restart_step_is_refused_inside_a_step():
    run = SolverRun(make_solver("heun"), context(), start())
    run.answer(denoiser(run.request.x, run.request.sigma))
    assert not run.at_step_start
    with pytest.raises(RuntimeError, match="before its first evaluation is answered"):
        run.restart_step(start())


def test_fresh_steps_run_on_a_new_solver_without_history():
    x, k = start(), 3
    fresh = SolverRun(make_solver("dpmpp_2m"), context(), x, frozenset({k}), lambda: make_solver("dpmpp_2m"))
    head = solve(make_solver("dpmpp_2m"), context(GRID[: k + 1]), x, denoiser)
    tail = solve(make_solver("dpmpp_2m"), context(GRID[k:]), head, denoiser)
    assert torch.equal(answer_one_at_a_time(fresh), tail)
    assert not torch.equal(tail, solve(make_solver("dpmpp_2m"), context(), x, denoiser))
    with pytest.raises(ValueError, match="fresh_steps needs make_solver"):
        SolverRun(make_solver("dpmpp_2m"), context(), x, frozenset({k}))


def last_request_and_result(name: str, options: dict | None = None):
    run = SolverRun(make_solver(name, **(options or {})), context(), start())
    while not run.done:
        request, denoised = run.request, denoiser(run.request.x, run.request.sigma)
        step, at_input = run.step_index, run.at_step_start
        run.answer(denoised)
    return request, denoised, at_input, step, run.result


@pytest.mark.parametrize("name", sorted(name for name, cls in SOLVERS.items() if cls.denoises_at_zero))
def test_the_step_to_zero_is_the_denoising_step(name):
    request, denoised, at_input, step, result = last_request_and_result(name)
    assert GRID[-1] == 0.0 and step == len(GRID) - 2
    assert at_input and request.sigma == GRID[-2]  # the step's one evaluation, at its start point
    assert torch.equal(result, denoised)  # x' = D(x^, sigma^)


class MovedStart(SOLVERS["euler"]):
    """Euler whose steps first evaluate D away from their input, as EDM churn does."""

    def start(self, ctx, i, x):
        return x + 1.0, 2.0 * ctx.sigmas[i]


def test_the_denoising_step_evaluates_at_the_solvers_start_point():
    run = SolverRun(MovedStart(), context(), start())
    while run.step_index < len(GRID) - 2:
        finished = run.answer(denoiser(run.request.x, run.request.sigma))
    assert run.request.sigma == 2.0 * GRID[-2] and torch.equal(run.request.x, finished.x_next + 1.0)
    assert not run.at_step_start
    denoised = denoiser(run.request.x, run.request.sigma)
    run.answer(denoised)
    assert run.done and torch.equal(run.result, denoised)


def test_the_denoising_step_starts_after_churn():
    churn = {"s_churn": 40.0, "s_tmin": 0.0, "s_tmax": 100.0}
    request, denoised, at_input, _, result = last_request_and_result("heun", churn)
    assert request.sigma > GRID[-2] and not at_input  # x^, sigma^ after EDM churn
    assert torch.equal(result, denoised)


def test_ipndm_takes_its_own_step_to_zero():
    assert not SOLVERS["ipndm"].denoises_at_zero
    _, denoised, _, _, result = last_request_and_result("ipndm")
    assert not torch.equal(result, denoised)  # the Adams-Bashforth step, with its history


@pytest.mark.parametrize(
    "name, options, per_step",
    [("euler", {}, 1), ("heun", {}, 2), ("srk", {}, 1), ("srk_dp", {}, 2), ("ipndm", {}, 1), ("dpmpp_3m_sde", {}, 1)],
)
@pytest.mark.parametrize("steps", [1, 2, 5])
def test_evaluation_plan_counts(name, options, per_step, steps):
    to_zero = fastdiff.get_sigmas("karras", steps, 0.01, 20.0).tolist()
    above_zero = to_zero[:-1] + [to_zero[-2] / 2]
    plan = evaluation_plan(lambda: make_solver(name, **options), above_zero)
    assert len(plan.sigmas) == per_step * steps and plan.max_per_step == per_step and plan.starts_at_input
    assert plan.steps == tuple(i for i in range(steps) for _ in range(per_step))
    assert plan.grid == tuple(above_zero) and plan.sigmas[0] == above_zero[0]
    plan = evaluation_plan(lambda: make_solver(name, **options), to_zero)
    last = 1 if SOLVERS[name].denoises_at_zero else per_step
    assert len(plan.sigmas) == per_step * (steps - 1) + last


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_evaluation_plan_lists_what_sample_evaluates(name):
    calls = []

    def recording(x, sigma):
        calls.append(float(sigma[0]))
        return denoiser(x, sigma)

    fastdiff.sample(recording, start(), GRID, name, seed=1)
    assert evaluation_plan(lambda: make_solver(name), GRID).sigmas == pytest.approx(calls, rel=1e-6)


def test_evaluation_plan_marks_a_churned_first_evaluation_and_grids_from_an_evaluation():
    churn = {"s_churn": 40.0, "s_tmin": 0.0, "s_tmax": 100.0}
    assert not evaluation_plan(lambda: make_solver("heun", **churn), GRID).starts_at_input
    plan = evaluation_plan(lambda: make_solver("heun"), GRID)
    assert plan.grid_from(3) == [plan.sigmas[3], *GRID[plan.steps[3] + 1 :]]


@pytest.mark.parametrize("name", ["srk", "heun", "ipndm", "dpmpp_2m_sde"])
def test_solve_traces_into_one_graph(name):
    ctx = context(batch=5)

    def run(x):
        return solve(make_solver(name), ctx, x, denoiser)

    x = start(batch=5).float()
    ctx.sigmas_tensor = ctx.sigmas_tensor.float()
    torch._dynamo.reset()
    compiled = torch.compile(run, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), run(x), rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------- the step from sigma = inf (docs/ALGORITHMS.md section 14)
FROM_INF = [float("inf"), *GRID]
flow_denoiser = FlowDenoiser(MIXTURE.flow_velocity)  # D at sigma = inf too: the mixture as a flow model


@pytest.mark.parametrize("name", ["euler", "heun", "dpmpp_2m", "ipndm"])
def test_the_step_from_infinity_then_the_solver_from_a_fresh_history(name):
    """A deterministic run from inf is D(n, inf) + sigma_1 n, then the solver's own run on the rest of the grid."""
    n = start(scale=1.0)
    after_step = flow_denoiser(n, float("inf")) + GRID[0] * n
    from_inf = solve(make_solver(name), context(FROM_INF), n, flow_denoiser)
    assert torch.equal(from_inf, solve(make_solver(name), context(), after_step, flow_denoiser))
    plan = evaluation_plan(lambda: make_solver(name), FROM_INF)
    assert plan.sigmas[0] == float("inf") and plan.steps.count(0) == 1 and plan.starts_at_input
    assert plan.sigmas[1:] == evaluation_plan(lambda: make_solver(name), GRID).sigmas


def test_restart_at_the_step_from_infinity():
    n, other = start(scale=1.0), start(scale=0.5)
    run = SolverRun(make_solver("srk"), context(FROM_INF), n)
    assert run.at_step_start and run.request.sigma == float("inf")
    run.restart_step(other)
    while not run.done:
        run.answer(flow_denoiser(run.request.x, run.request.sigma))
    assert torch.equal(run.result, solve(make_solver("srk"), context(FROM_INF), other, flow_denoiser))


def test_solve_from_infinity_traces_into_one_graph():
    ctx = context(FROM_INF[:4], batch=5)
    ctx.sigmas_tensor = ctx.sigmas_tensor.float()

    def run(x):
        return solve(make_solver("ipndm"), ctx, x, lambda x, sigma: x * 0.5)

    x = start(batch=5, scale=1.0).float()
    torch._dynamo.reset()
    compiled = torch.compile(run, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), run(x), rtol=1e-6, atol=1e-6)
