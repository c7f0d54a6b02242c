"""LD3 (fastdiff.ld3): learned grids on an exact target, the differentiable solver path, schedule files, errors.

The claims are measured against the exact probability-flow ODE map of `fastdiff.ld3.targets.trimodal_1d` (a 1-D
three-mode mixture; `GaussianMixture.ode_solution` is the quantile map) on 1000 held-out noises. Training here
uses `max_epochs=25` to stay fast; bench/ld3_table.py runs the defaults over NFE 4-10 and more targets
(results in bench/LD3.md).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

import fastdiff
from fastdiff import sampling as K
from fastdiff.driver import Schedule
from fastdiff.ld3 import LearnedSchedule, learn_sigmas, learnable_solvers, steps_for_nfe
from fastdiff.ld3.compare import best_hand_designed, compare
from fastdiff.ld3.network import NetworkCall
from fastdiff.ld3.parameterization import Discretization
from fastdiff.ld3.solve import solve
from fastdiff.ld3.targets import trimodal_1d
from fastdiff.ops.solver_step import solver_step

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
SOLVERS = ("euler", "heun", "dpmpp_2m", "ipndm")
FAST = {"max_epochs": 25, "progress": False}


@pytest.fixture(scope="module")
def target():
    gm = trimodal_1d()
    x_T = torch.randn(1000, 1, generator=torch.Generator().manual_seed(123), dtype=torch.float64) * SIGMA_MAX
    return gm, x_T, gm.ode_solution(x_T, SIGMA_MAX, SIGMA_MIN)


def learn(gm, solver, nfe, **options):
    return learn_sigmas(gm.denoiser, solver, nfe, shape=(1,), **{"teacher_solver": gm.ode_solution, **FAST, **options})


# ---------------------------------------------------------------------------------------------
# The measured claim: learned error <= half the best hand-designed grid's.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("nfe", [4, 6])
@pytest.mark.parametrize("solver", SOLVERS)
def test_learned_grid_halves_the_best_hand_designed_error(target, solver, nfe):
    gm, x_T, exact = target
    schedule = learn(gm, solver, nfe)
    rows = compare(gm.denoiser, schedule, x_T, exact)
    learned, best = rows[0], best_hand_designed(rows)
    best_w2 = min(r.sliced_w2 for r in rows[1:])
    table = ", ".join(f"{r.grid} {r.rmse:.3g}/{r.sliced_w2:.3g}" for r in rows)
    assert learned.rmse <= 0.5 * best.rmse, f"{solver} NFE {nfe}: RMSE/W2 {table}"
    assert learned.sliced_w2 <= 0.5 * best_w2, f"{solver} NFE {nfe}: RMSE/W2 {table}"
    assert schedule.evaluations <= nfe


# ---------------------------------------------------------------------------------------------
# Ablations (bench/LD3.md has them for every solver, NFE 4 and 8, three seeds)
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("solver", ["euler", "dpmpp_2m"])
def test_decoupled_model_time_helps(target, solver):
    """Measured (bench/LD3.md, 3 seeds): decoupling cuts the held-out RMSE 3-12x for euler, heun and dpmpp_2m at NFE 4
    (evaluating D at a shifted sigma acts like a midpoint rule); for ipndm the gain is smaller (about 2x at NFE 4,
    1.7x at NFE 8), so it is not asserted here."""
    gm, x_T, exact = target
    errors = {d: compare(gm.denoiser, learn(gm, solver, 4, decoupled=d), x_T, exact)[0].rmse for d in (True, False)}
    assert errors[True] <= 0.5 * errors[False], errors


def test_soft_objective_is_active_and_does_not_hurt(target):
    """The slack moves are taken, but measured on exact targets the soft objective does not lower the held-out RMSE
    (bench/LD3.md: within seed noise at LD3's default radius and at 10x it, worse at r >= 0.01 in 1-D); assert only
    that the default radius does not hurt beyond that noise (15%: runs on two machines differed by 6%)."""
    gm, x_T, exact = target
    soft = learn(gm, "ipndm", 4)
    hard = learn(gm, "ipndm", 4, radius=0.0)
    assert soft.config["radius"] == 0.001 / 4**2
    assert soft.config["slack_moves_accepted"] > 0 and hard.config["slack_moves_accepted"] == 0
    errors = [compare(gm.denoiser, s, x_T, exact)[0].rmse for s in (soft, hard)]
    assert errors[0] <= 1.15 * errors[1], errors


# ---------------------------------------------------------------------------------------------
# The differentiable solver path
# ---------------------------------------------------------------------------------------------
GRID = [80.0, 9.0, 1.3, 0.25, 0.04, 0.002]


@pytest.mark.parametrize("solver", [*SOLVERS, "dpmpp_3m"])
def test_tensor_grid_gives_the_float_result_and_true_gradients(solver):
    """The 0-d tensor path computes what the float path does, and d(output)/d(sigma_2) matches a central
    difference of the float path."""
    gm = trimodal_1d()
    x = torch.randn(16, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * SIGMA_MAX
    network = NetworkCall(gm.denoiser, sigma_grad="finite_difference")
    options = {}
    floats = solve(network, solver, options, GRID, x)
    sigmas = torch.tensor(GRID, dtype=torch.float64, requires_grad=True)
    tensors = solve(network, solver, options, list(sigmas.unbind()), x)
    torch.testing.assert_close(tensors, floats, rtol=1e-12, atol=1e-12)
    (grad,) = torch.autograd.grad(tensors.sum(), sigmas)
    h = 1e-6 * GRID[2]
    up, down = list(GRID), list(GRID)
    up[2] += h
    down[2] -= h
    fd = (solve(network, solver, options, up, x).sum() - solve(network, solver, options, down, x).sum()) / (2 * h)
    assert math.isclose(float(grad[2]), float(fd), rel_tol=1e-4, abs_tol=1e-8), (float(grad[2]), float(fd))


def test_solver_step_takes_grad_coefficients_on_reference_only():
    x = torch.randn(3, 4, dtype=torch.float64)
    a = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    out = solver_step(x, [x], a, [0.25], backend="reference")
    torch.testing.assert_close(out, 0.75 * x)
    (grad,) = torch.autograd.grad(out.sum(), a)
    torch.testing.assert_close(grad, x.sum())
    if fastdiff.backends()["cpu"].available:
        with pytest.raises(TypeError, match=r"bs\[0\].*reference"):
            solver_step(x, [x], 1.0, [a], backend="cpu")
    with pytest.raises(TypeError, match="a must"):  # a plain tensor (no grad) is still not a host number
        solver_step(x, [x], torch.tensor(0.5), [1.0], backend="reference")


def test_finite_difference_sigma_gradient_matches_autograd():
    """For a denoiser differentiable in sigma (one Gaussian, D = mu + s0^2 / (s0^2 + sigma^2) (x - mu)) both ways
    of reaching the network's sigma give the same gradient of the loss in xi and xi_c; so does checkpointing."""

    def denoiser(x, sigma):
        shrink = (0.25 / (0.25 + sigma**2)).view(-1, 1)
        return 1.0 + shrink * (x - 1.0)

    x = torch.randn(8, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * SIGMA_MAX
    grads = []
    for network in (
        NetworkCall(denoiser),
        NetworkCall(denoiser, sigma_grad="finite_difference"),
        NetworkCall(denoiser, checkpoint=True),
    ):
        grid = Discretization(5, SIGMA_MIN, SIGMA_MAX, decoupled=True)
        with torch.no_grad():
            grid.xi_c.copy_(torch.tensor([0.0, 0.1, -0.1, 0.05, 0.0]))
        sigmas, model_sigmas = grid()
        out = solve(network, "ipndm", {}, list(sigmas.unbind()), x, list(model_sigmas.unbind()))
        out.square().sum().backward()
        grads.append(torch.cat([grid.xi.grad, grid.xi_c.grad]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(grads[2], grads[0], rtol=1e-12, atol=0.0)
    assert grads[0][5 + 1 : 5 + 4].abs().min() > 0  # the interior model-time offsets get gradients


def test_parameterization_is_monotone_with_fixed_endpoints():
    grid = Discretization(7, SIGMA_MIN, SIGMA_MAX, decoupled=True, to_zero=True)
    with torch.no_grad():
        grid.xi.copy_(torch.randn(7, generator=torch.Generator().manual_seed(2)) * 3)
        grid.xi_c.fill_(10.0)  # far beyond the clip: model times must stay ordered
    sigmas, model_sigmas = grid()
    for s in (sigmas, model_sigmas):
        assert s[0].item() == SIGMA_MAX and s[-2].item() == SIGMA_MIN and s[-1].item() == 0.0
        assert bool((s.diff() < 0).all())
    assert not torch.equal(sigmas, model_sigmas)
    logsnr = fastdiff.get_sigmas("logsnr", 7, SIGMA_MIN, SIGMA_MAX)
    torch.testing.assert_close(Discretization(7, SIGMA_MIN, SIGMA_MAX, decoupled=False, to_zero=True)()[0], logsnr)


# ---------------------------------------------------------------------------------------------
# Using a schedule: fastdiff.sample, the k-diffusion functions, files
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def schedule(target):
    return learn(target[0], "ipndm", 4, max_epochs=3)


def test_sample_uses_grid_and_model_times(target, schedule):
    gm, x_T, _ = target
    x = x_T[:64]
    assert isinstance(schedule, Schedule)  # what the driver takes as `sigmas`
    reference = solve(NetworkCall(gm.denoiser), "ipndm", {}, schedule.sigma_list, x, schedule.model_sigma_list)
    torch.testing.assert_close(fastdiff.sample(gm.denoiser, x, schedule, "ipndm"), reference, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(K.sample_ipndm(gm.denoiser, x, schedule), reference, rtol=1e-12, atol=1e-12)
    seen = []
    fastdiff.sample(lambda y, s: (seen.append(float(s[0])), gm.denoiser(y, s))[1], x, schedule, "ipndm")
    assert seen == pytest.approx(list(schedule.model_sigma_list[:-1]), rel=1e-15) and len(seen) == schedule.evaluations
    with pytest.raises(ValueError, match="learned for solver 'ipndm'"):
        fastdiff.sample(gm.denoiser, x, schedule, "euler")
    with pytest.raises(ValueError, match="options"):
        K.sample_ipndm(gm.denoiser, x, schedule, max_order=2)


def test_schedule_file_round_trip_and_validation(schedule, tmp_path):
    path = tmp_path / "s.json"
    schedule.save(path)
    loaded = LearnedSchedule.load(path)
    assert loaded == schedule
    assert loaded.sigmas.tolist() == list(schedule.sigma_list)
    data = json.loads(path.read_text())
    assert {
        "version",
        "solver",
        "order",
        "nfe",
        "sigma_min",
        "sigma_max",
        "sigmas",
        "model_sigmas",
        "loss_history",
        "created",
    } <= set(data)

    good = path.read_text()

    def broken(change, match):
        bad = json.loads(good)
        change(bad)
        path.write_text(json.dumps(bad))
        with pytest.raises(ValueError, match=match):
            LearnedSchedule.load(path)

    broken(lambda d: d["sigmas"].__setitem__(2, d["sigmas"][0] * 2), "strictly decreasing")
    broken(lambda d: d["sigmas"].__setitem__(0, 81.0), "sigma range endpoint")
    broken(lambda d: d["sigmas"].__setitem__(1, float("nan")), "NaN")
    broken(lambda d: d["model_sigmas"].pop(), "model_sigmas")
    broken(lambda d: d.__setitem__("solver", "srk"), "does not support learned schedules")
    broken(lambda d: d.__setitem__("version", 99), "version")
    broken(lambda d: d.pop("sigmas"), "lacks")
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a fastdiff LD3 schedule"):
        LearnedSchedule.load(path)


# ---------------------------------------------------------------------------------------------
# NFE mapping and bad input
# ---------------------------------------------------------------------------------------------
def test_nfe_to_steps():
    assert learnable_solvers() == ("dpmpp_2m", "dpmpp_3m", "euler", "heun", "ipndm")
    for solver in ("euler", "dpmpp_2m", "dpmpp_3m", "ipndm"):
        assert steps_for_nfe(solver, {}, 6, False) == (6, 6) and steps_for_nfe(solver, {}, 6, True) == (6, 6)
    assert steps_for_nfe("heun", {}, 6, False) == (3, 6)
    assert steps_for_nfe("heun", {}, 7, False) == (3, 6)
    assert steps_for_nfe("heun", {}, 6, True) == (3, 5)  # the step to 0 is one Euler evaluation


def test_to_zero_schedule_ends_with_zero(target):
    gm = target[0]
    schedule = learn(gm, "heun", 6, to_zero=True, max_epochs=2)
    assert schedule.sigma_list[-1] == 0.0 and schedule.sigma_list[-2] == SIGMA_MIN and schedule.evaluations == 5
    calls = []
    fastdiff.sample(lambda y, s: (calls.append(1), gm.denoiser(y, s))[1], target[1][:4], schedule, "heun")
    assert len(calls) == 5


def test_bad_input_raises(target):
    gm = target[0]
    with pytest.raises(ValueError, match="nfe must be >= 1"):
        learn(gm, "euler", 0)
    with pytest.raises(ValueError, match="no interior grid point"):
        learn(gm, "euler", 1)
    with pytest.raises(ValueError, match="too small for 'heun'"):
        learn(gm, "heun", 1)
    with pytest.raises(ValueError, match="supports: dpmpp_2m, dpmpp_3m, euler, heun, ipndm"):
        learn(gm, "srk", 4)
    with pytest.raises(ValueError, match="s_churn"):
        learn(gm, "euler", 4, solver_options={"s_churn": 1.0})
    with pytest.raises(ValueError, match="radius"):
        learn(gm, "euler", 4, radius=-1.0)
    with pytest.raises(ValueError, match="teacher produced NaN"):
        learn(gm, "euler", 4, teacher_solver=lambda x, s, t: x * float("nan"))
    with pytest.raises(ValueError, match=r"distance must be one of \['l2', 'squared_l2'\]"):
        learn(gm, "euler", 4, distance="l1")


def test_squared_l2_distance_trains_on_the_mean_squared_error(target):
    """distance="squared_l2": the validation losses are the mean squared error of the student on the held-out pairs."""
    from fastdiff.ld3.baselines import hand_designed_grid

    gm = target[0]
    schedule = learn(gm, "euler", 4, distance="squared_l2", init="karras", max_epochs=1)
    n_train, n_val = schedule.config["n_samples"], schedule.config["n_val"]
    x_all = torch.randn(n_train + n_val, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * SIGMA_MAX
    x_val = x_all[n_train:]
    grid = hand_designed_grid("karras", schedule.steps + 1, SIGMA_MIN, SIGMA_MAX, False)
    out = solve(NetworkCall(gm.denoiser), "euler", {}, grid, x_val, grid)
    mse = float((out - gm.ode_solution(x_val, SIGMA_MAX, SIGMA_MIN)).pow(2).sum(1).mean())
    assert schedule.config["start_val"]["karras"] == pytest.approx(mse, rel=1e-9)


def test_non_finite_loss_raises_and_saves_nothing(target, tmp_path):
    gm = target[0]

    def poisoned(x, sigma):  # finite where validation asks (host floats), NaN inside the differentiable training solve
        out = gm.denoiser(x, sigma)
        return out * float("nan") if sigma.requires_grad else out

    schedule = None
    with pytest.raises(FloatingPointError, match="non-finite"):
        schedule = learn_sigmas(poisoned, "euler", 4, shape=(1,), teacher_solver=gm.ode_solution, sigma_grad="autograd", **FAST)
    assert schedule is None


def test_cli_writes_table_png_and_schedule(tmp_path, capsys):
    from fastdiff.__main__ import main

    out = tmp_path / "schedule.json"
    main(
        [
            "ld3",
            "--solver",
            "euler",
            "--nfe",
            "4",
            "--samples",
            "20",
            "--eval-samples",
            "200",
            "--epochs",
            "3",
            "--out",
            str(out),
            "--plot-dir",
            str(tmp_path),
            "--no-progress",
        ]
    )
    text = capsys.readouterr().out
    assert "learned / best hand-designed" in text and "time_quadratic" in text
    assert LearnedSchedule.load(out).solver == "euler"
    assert (tmp_path / "ld3_euler_nfe4.png").stat().st_size > 0
    with pytest.raises(SystemExit):
        main(["ld3", "--solver", "srk"])


# ---------------------------------------------------------------------------------------------
# No invalid schedule, and no exception that throws away a finished training
# ---------------------------------------------------------------------------------------------
HUGE, TINY = 1e300, 1e-300
F64 = {"dtype": torch.float64}


def signs(n):
    return (-1.0) ** torch.arange(n, **F64)


def seeded(seed, n):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), **F64)


XI_CASES = {
    "init": lambda n: torch.ones(n, **F64),
    "equal": lambda n: torch.full((n,), 7.0, **F64),
    "tiny": lambda n: TINY * torch.arange(n, **F64),
    "huge_alternating": lambda n: HUGE * signs(n),
    "one_huge_gap": lambda n: torch.zeros(n, **F64).index_fill_(0, torch.tensor([2]), HUGE),
    "one_empty_gap": lambda n: torch.zeros(n, **F64).index_fill_(0, torch.tensor([2]), -HUGE),
    "huge_xi0": lambda n: torch.cat([torch.tensor([HUGE], **F64), seeded(3, n - 1)]),
    "spread": lambda n: 60 * seeded(4, n),
}
XI_C_CASES = {
    "zeros": lambda n: torch.zeros(n, **F64),
    "towards_each_other": lambda n: HUGE * signs(n),  # neighbours clipped into the same gap
    "away": lambda n: -HUGE * signs(n),
    "all_up": lambda n: torch.full((n,), HUGE, **F64),
    "all_down": lambda n: torch.full((n,), -HUGE, **F64),
    "tiny": lambda n: torch.full((n,), TINY, **F64),
}
RANGES = [(SIGMA_MIN, SIGMA_MAX), (1e-5, 1e5), (1.0, 1.001), (1e-300, 1e300)]


def schedule_of(grid: Discretization, sigmas: torch.Tensor, model_sigmas: torch.Tensor) -> LearnedSchedule:
    steps = len(sigmas) - 1
    return LearnedSchedule(
        solver="euler",
        solver_options={},
        nfe=steps,
        steps=steps,
        evaluations=steps,
        sigma_min=grid.sigma_min,
        sigma_max=grid.sigma_max,
        to_zero=grid.to_zero,
        decoupled=grid.xi_c is not None,
        sigma_list=tuple(sigmas.tolist()),
        model_sigma_list=tuple(model_sigmas.tolist()),
    )


@pytest.mark.parametrize("sigma_range", RANGES, ids=lambda r: f"{r[0]:g}-{r[1]:g}")
@pytest.mark.parametrize("xi_c", XI_C_CASES)
@pytest.mark.parametrize("xi", XI_CASES)
def test_any_parameters_give_a_valid_schedule(xi, xi_c, sigma_range):
    """Adversarial raw parameters (huge, tiny, equal; the model-time offsets of neighbours pushed into each other at
    the largest clip 1/2) still give strictly decreasing float64 grids and model times that `LearnedSchedule`
    accepts, also after `project_`, and finite gradients."""
    lo, hi = sigma_range
    for levels, clip, to_zero in ((7, 0.5, False), (12, 0.5, True), (5, 0.3, False), (3, 0.5, False)):
        grid = Discretization(levels, lo, hi, decoupled=True, clip=clip, to_zero=to_zero)
        with torch.no_grad():
            grid.xi.copy_(XI_CASES[xi](levels))
            grid.xi_c.copy_(XI_C_CASES[xi_c](levels))
        for _ in range(2):
            sigmas, model_sigmas = grid()
            for s in (sigmas, model_sigmas):
                assert bool(torch.isfinite(s).all()) and bool((s.diff() < 0).all()), (levels, s.tolist())
                assert s[0].item() == hi and s[-2 if to_zero else -1].item() == lo
            schedule_of(grid, sigmas, model_sigmas)  # raises unless valid
            grid.project_()
        sigmas, model_sigmas = grid()
        (model_sigmas[:-1].log().sum() + sigmas[:-1].log().sum()).backward()
        assert bool(torch.isfinite(grid.xi.grad).all()) and bool(torch.isfinite(grid.xi_c.grad).all())


def test_model_times_clipped_towards_each_other_stay_apart_but_close():
    """At clip 1/2 two neighbours pushed into the same gap meet in the middle up to delta / 2 = 2^-33 in lambda:
    distinct, ordered, and within 1e-9 of the midpoint (the optimum such a loss asks for)."""
    grid = Discretization(7, SIGMA_MIN, SIGMA_MAX, decoupled=True)
    with torch.no_grad():
        grid.xi_c.copy_(torch.tensor([0.0, 0.0, 5.0, -5.0, 0.0, 0.0, 0.0]))
    with torch.no_grad():
        sigmas, model_sigmas = grid()
    lam, model_lam = -sigmas.log(), -model_sigmas.log()
    middle = (lam[2] + lam[3]) / 2
    assert model_lam[2] < model_lam[3]
    assert abs(float(model_lam[2] - middle)) < 1e-9 and abs(float(model_lam[3] - middle)) < 1e-9
    assert float(model_lam[3] - model_lam[2]) >= 2.0**-33 * -math.log(SIGMA_MIN) * 0.99


def test_parameterization_start_grid_and_bad_arguments():
    from fastdiff.ld3.baselines import HAND_DESIGNED, hand_designed_grid

    for kind in HAND_DESIGNED:
        want = hand_designed_grid(kind, 7, SIGMA_MIN, SIGMA_MAX, False)
        grid = Discretization(7, SIGMA_MIN, SIGMA_MAX, decoupled=True)
        grid.start_from(want)
        torch.testing.assert_close(grid()[0], torch.tensor(want, dtype=torch.float64), rtol=1e-14, atol=0.0)
    with pytest.raises(ValueError, match="too narrow for 7 distinct levels"):
        Discretization(7, 1.0, 1.0 + 1e-12, decoupled=True)
    for clip in (0.0, 0.6, float("nan"), True):
        with pytest.raises(ValueError, match="model_time_clip"):
            Discretization(7, SIGMA_MIN, SIGMA_MAX, decoupled=True, clip=clip)
    for lo, hi in ((0.0, 1.0), (2.0, 1.0), (float("nan"), 1.0), (1.0, float("inf"))):
        with pytest.raises(ValueError, match="sigma_min"):
            Discretization(7, lo, hi, decoupled=True)


def mixture_2d():
    from fastdiff.toy import GaussianMixture

    means = [(-2.2, 1.0), (0.7, -1.8), (2.4, 2.0), (-0.5, 0.3)]
    return GaussianMixture(means, [0.15, 0.35, 0.25, 0.1], [0.25, 0.25, 0.3, 0.2])


def test_learned_model_times_that_met_are_a_valid_schedule(tmp_path):
    """Regression: dpmpp_2m at NFE 6 on a 2-D four-mode mixture drove two neighbouring model times into the same gap
    from both sides; they tied in float64 and the finished training ended in "model_sigmas must be strictly
    decreasing" (60 epochs are enough to get there)."""
    gm = mixture_2d()
    schedule = learn_sigmas(
        gm.denoiser, "dpmpp_2m", 6, shape=(2,), teacher_solver="heun", teacher_nfe=400, max_epochs=60, progress=False
    )
    model = schedule.model_sigma_list
    gaps = [math.log(a / b) for a, b in zip(model[:-1], model[1:], strict=True)]
    assert min(gaps) > 0
    assert min(gaps) < 1e-6  # the model times really met (up to the floor): this is the case that crashed
    schedule.save(tmp_path / "s.json")
    assert LearnedSchedule.load(tmp_path / "s.json") == schedule


@pytest.mark.parametrize("where", ["train", "val"])
def test_late_non_finite_loss_returns_the_best_grid_so_far(target, tmp_path, where):
    """A non-finite loss after an epoch has improved on the start ends training with a warning, not an exception:
    the best grid so far is returned (and can be saved). In the training solve the sigma requires grad; the
    validation solves run without autograd (with radius 0 there are no other solves)."""
    gm = target[0]
    calls = {"train": 0, "val": 0}
    poison_after = {"train": 2 * 5 * 4, "val": 4 * 4 + 2 * 4}[where]  # epochs x 5 batches x 4 steps; 4 start grids

    def flaky(x, sigma):
        kind = "train" if torch.is_grad_enabled() else "val"
        calls[kind] += 1
        out = gm.denoiser(x, sigma)
        return out * float("nan") if kind == where and calls[kind] > poison_after else out

    with pytest.warns(RuntimeWarning, match=f"non-finite {'training' if where == 'train' else 'validation'} loss"):
        schedule = learn_sigmas(
            flaky, "dpmpp_2m", 4, shape=(1,), teacher_solver=gm.ode_solution, sigma_grad="autograd", radius=0.0, **FAST
        )
    assert schedule.config["best_epoch"] == 1 and "epoch 2" in schedule.config["stop_reason"]  # val improves in epoch 1
    assert schedule.config["epochs"] == 2 and all(math.isfinite(v) for v in schedule.loss_history["val"])
    assert schedule.config["best_val"] < max(v for v in schedule.config["start_val"].values())
    schedule.save(tmp_path / "s.json")


def test_non_finite_start_grid_is_saved_as_null(target, tmp_path):
    """One starting grid with a NaN validation loss: the others are used, and the file records that one as null
    (JSON has no NaN; before, `save` raised after the training)."""
    from fastdiff.ld3.baselines import hand_designed_grid

    gm = target[0]
    karras_level = hand_designed_grid("karras", 5, SIGMA_MIN, SIGMA_MAX, False)[1]

    def nan_at_one_level(x, sigma):
        out = gm.denoiser(x, sigma)
        near = not torch.is_grad_enabled() and math.isclose(float(sigma[0]), karras_level, rel_tol=1e-9)
        return out * float("nan") if near else out

    schedule = learn_sigmas(
        nan_at_one_level, "euler", 4, shape=(1,), teacher_solver=gm.ode_solution, sigma_grad="autograd", max_epochs=1
    )
    assert schedule.config["start_val"]["karras"] is None and schedule.config["init"] != "karras"
    schedule.save(tmp_path / "s.json")
    assert LearnedSchedule.load(tmp_path / "s.json").config["start_val"]["karras"] is None


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"sigma_min": float("nan")}, ValueError, "sigma_min must be a positive finite"),
        ({"sigma_min": -0.1}, ValueError, "sigma_min must be a positive finite"),
        ({"sigma_max": float("inf")}, ValueError, "sigma_max must be a positive finite"),
        ({"sigma_max": SIGMA_MIN}, ValueError, "sigma_min must be < sigma_max"),
        ({"sigma_min": 1.0, "sigma_max": 1.0 + 1e-12}, ValueError, "too narrow"),
        ({"lr": 0.0}, ValueError, "lr must be a positive finite"),
        ({"lr": float("nan")}, ValueError, "lr must be a positive finite"),
        ({"lr_model_time": float("inf")}, ValueError, "lr_model_time must be a positive finite"),
        ({"grad_clip": -1.0}, ValueError, "grad_clip must be a positive finite"),
        ({"n_samples": 0}, ValueError, "n_samples must be >= 1"),
        ({"n_val": 0}, ValueError, "n_val must be >= 1"),
        ({"batch_size": 2.5}, TypeError, "batch_size must be an int"),
        ({"model_time_clip": 0.75}, ValueError, "model_time_clip"),
        ({"model_time_clip": float("nan")}, ValueError, "model_time_clip"),
        ({"teacher_solver": "heun", "teacher_nfe": 1}, ValueError, "teacher_nfe=1 does not fit teacher_solver 'heun'"),
        ({"teacher_solver": "srk"}, ValueError, "teacher_solver must be an ODE solver"),
        ({"teacher_solver": 3}, TypeError, "teacher_solver must be a solver name"),
        ({"seed": -1}, ValueError, "seed must be an int"),
        ({"seed": 1.5}, ValueError, "seed must be an int"),
        ({"dtype": torch.int64}, TypeError, "dtype must be a floating"),
    ],
)
def test_bad_options_raise_before_any_work(options, error, match):
    """Out-of-range options are refused, naming the argument, before the denoiser or the teacher runs."""

    def untouchable(*args):
        raise AssertionError("the denoiser or teacher ran before the options were checked")

    options = {"teacher_solver": untouchable, **options}
    with pytest.raises(error, match=match):
        learn_sigmas(untouchable, "euler", 4, shape=(1,), progress=False, **options)


def cli_args(tmp_path, *extra):
    base = ["ld3", "--solver", "euler", "--nfe", "4", "--samples", "20", "--eval-samples", "200", "--epochs", "1"]
    return [*base, "--plot-dir", str(tmp_path / "plots"), "--no-progress", *extra]


def test_cli_refuses_to_replace_a_schedule_without_overwrite(tmp_path, capsys):
    from fastdiff.__main__ import main

    out = tmp_path / "schedule.json"
    out.write_text("an older schedule")
    with pytest.raises(SystemExit):
        main(cli_args(tmp_path, "--out", str(out)))
    assert "exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert out.read_text() == "an older schedule"


def test_schedule_save_failure_keeps_the_previous_file(schedule, tmp_path, monkeypatch):
    path = tmp_path / "keep.json"
    path.write_text("previous")
    monkeypatch.setattr("os.replace", lambda *a: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        schedule.save(path)
    assert path.read_text() == "previous" and not (tmp_path / "keep.json.tmp").exists()


def test_cli_says_when_it_replaces_a_schedule(tmp_path, capsys):
    from fastdiff.__main__ import main

    out = tmp_path / "schedule.json"
    out.write_text("an older schedule")
    main(cli_args(tmp_path, "--out", str(out), "--overwrite"))
    text = capsys.readouterr().out
    assert f"note: {out} exists and will be replaced" in text and "(replaced the existing file)" in text
    assert text.index("will be replaced") < text.index("trained in")
    assert LearnedSchedule.load(out).solver == "euler"


@pytest.mark.parametrize("bad", ["out_is_dir", "out_dir_missing", "plot_dir_is_file"])
def test_cli_refuses_unwritable_outputs_before_training(tmp_path, capsys, bad):
    from fastdiff.__main__ import main

    (tmp_path / "a_file").write_text("")
    extra = {
        "out_is_dir": ["--out", str(tmp_path)],
        "out_dir_missing": ["--out", str(tmp_path / "missing" / "s.json")],
        "plot_dir_is_file": ["--plot-dir", str(tmp_path / "a_file" / "plots")],
    }[bad]
    with pytest.raises(SystemExit):
        main(cli_args(tmp_path, *extra))
    captured = capsys.readouterr()
    assert "trained in" not in captured.out and ("--out" in captured.err or "--plot-dir" in captured.err)
