"""Singlestep DPM-Solver (`dpm_solver`) and `fastdiff.sampling.sample_dpm_fast` against k-diffusion's `DPMSolver` and
`sample_dpm_fast` in float64 (k-diffusion run with torch's default dtype float64, since it builds its lambda grid in the
default dtype), its measured orders, its options' errors and its run from sigma = inf."""

from __future__ import annotations

import inspect
import math
import random

import numpy as np
import pytest
import test_ode_order as ode_order
import torch
from kdiffusion_loader import load_kdiffusion_sampling
from peer_targets import start, targets

import fastdiff
from fastdiff import sampling
from fastdiff.models import FlowDenoiser
from fastdiff.solvers import make_solver
from fastdiff.toy import GaussianMixture

K = load_kdiffusion_sampling()
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0


def all_targets(seed: int) -> dict[str, GaussianMixture]:
    g = torch.Generator().manual_seed(seed)
    mean, std = torch.randn(1, generator=g, dtype=torch.float64), 0.2 + float(torch.rand(1, generator=g, dtype=torch.float64))
    return {"gaussian_1d": GaussianMixture.gaussian(mean, std), **targets(seed)}


@pytest.fixture
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def assert_equal_to_peer(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    scale = max(1.0, float(theirs.abs().max()))
    assert float((ours - theirs).abs().max()) <= 1e-10 * scale


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8, 10, 15])
@pytest.mark.parametrize("target", ["gaussian_1d", "gaussian_8d", "ring_2d"])
def test_sample_dpm_fast_equals_kdiffusion(target, n, float64_default):
    gm = all_targets(n)[target]
    x = start(gm, SIGMA_MAX, n + 1)
    theirs_calls, ours_calls = [], []

    def model(calls):
        def denoise(x, sigma):
            calls.append(float(sigma[0]))
            return gm.denoiser(x, sigma)

        return denoise

    theirs_info, ours_info = [], []
    theirs = K.sample_dpm_fast(model(theirs_calls), x, SIGMA_MIN, SIGMA_MAX, n, disable=True, callback=theirs_info.append)
    ours = sampling.sample_dpm_fast(model(ours_calls), x, SIGMA_MIN, SIGMA_MAX, n, disable=True, callback=ours_info.append)
    assert_equal_to_peer(ours, theirs)
    assert len(ours_calls) == len(theirs_calls) == n
    np.testing.assert_allclose(ours_calls, theirs_calls, rtol=1e-13)
    assert len(ours_info) == len(theirs_info)
    for a, b in zip(ours_info, theirs_info, strict=True):
        assert a["i"] == b["i"] and set(b) <= set(a)
        for key in ("sigma", "sigma_hat", "t", "t_up"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=1e-13), key
        assert_equal_to_peer(a["x"], b["x"])
        assert_equal_to_peer(a["denoised"], b["denoised"])


def kdiffusion_chain(gm: GaussianMixture, x: torch.Tensor, sigmas: list[float], orders: list[int]) -> torch.Tensor:
    """k-diffusion's DPMSolver steps of the given orders over the positive part of `sigmas`, then x = D where the
    grid ends at 0."""
    solver = K.DPMSolver(lambda x, sigma: gm.denoiser(x, sigma))
    steps = {1: solver.dpm_solver_1_step, 2: solver.dpm_solver_2_step, 3: solver.dpm_solver_3_step}
    for i, (sigma, sigma_next) in enumerate(zip(sigmas, sigmas[1:], strict=False)):
        if sigma_next == 0.0:
            return gm.denoiser(x, sigma)
        t, t_next = solver.t(torch.tensor(sigma)), solver.t(torch.tensor(sigma_next))
        x, _ = steps[orders[i]](x, t, t_next)
    return x


@pytest.mark.parametrize("ends_at_zero", [True, False], ids=["to_zero", "to_sigma_min"])
@pytest.mark.parametrize("grid", ["karras", "logsnr"])
@pytest.mark.parametrize("steps", [3, 8, 17])
@pytest.mark.parametrize("target", ["gaussian_1d", "gaussian_8d", "ring_2d"])
def test_solver_equals_kdiffusion_steps(target, steps, grid, ends_at_zero, float64_default):
    gm = all_targets(steps)[target]
    sigmas = fastdiff.get_sigmas(grid, steps, SIGMA_MIN, SIGMA_MAX).tolist()
    if not ends_at_zero:
        sigmas = sigmas[:-1]
    x = start(gm, sigmas[0], steps)
    for order in (1, 2, 3):
        ours = fastdiff.sample(gm.denoiser, x, sigmas, "dpm_solver", order=order)
        assert_equal_to_peer(ours, kdiffusion_chain(gm, x, sigmas, [order] * (len(sigmas) - 1)))
    rng = random.Random(steps)
    orders = [rng.choice((1, 2, 3)) for _ in sigmas[1:]]
    ours = fastdiff.sample(gm.denoiser, x, sigmas, "dpm_solver", orders=orders)
    assert_equal_to_peer(ours, kdiffusion_chain(gm, x, sigmas, orders))


def test_evaluations_follow_the_orders():
    gm = all_targets(0)["gaussian_8d"]
    sigmas = fastdiff.get_sigmas("karras", 5, SIGMA_MIN, SIGMA_MAX).tolist()
    orders = [3, 1, 2, 2, 3]
    calls = []

    def model(x, sigma):
        calls.append(float(sigma[0]))
        return gm.denoiser(x, sigma)

    fastdiff.sample(model, start(gm, sigmas[0], 0), sigmas, "dpm_solver", orders=orders)
    assert len(calls) == 3 + 1 + 2 + 2 + 1  # the step to 0 is the loop's denoising step
    sigma, sigma_next = sigmas[0], sigmas[1]
    h = math.log(sigma / sigma_next)
    assert calls[:4] == pytest.approx([sigma, sigma * math.exp(-h / 3), sigma * math.exp(-2 * h / 3), sigma_next])


@pytest.mark.parametrize("target", ode_order.TARGETS)
@pytest.mark.parametrize("order", [1, 2, 3])
def test_convergence_order(order, target):
    """tests/test_ode_order.py's fit (nested log-sigma grids, 20 -> 0.05 without the step to 0), for each order."""
    gm = ode_order.TARGETS[target]
    z = torch.randn(64, gm.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = gm.mean + z * gm.cov_at(ode_order.SIGMA_MAX).diagonal().sqrt()
    exact = gm.ode_solution(x, ode_order.SIGMA_MAX, ode_order.SIGMA_MIN)
    errors = [
        float((fastdiff.sample(gm.denoiser, x, ode_order.log_grid(n), "dpm_solver", order=order) - exact).abs().max())
        for n in ode_order.STEPS
    ]
    fitted = -np.polyfit(np.log(ode_order.STEPS), np.log(errors), 1)[0]
    assert make_solver("dpm_solver", order=order).order == order
    assert abs(fitted - order) <= 0.2, f"order {fitted:.3f}, expected {order}, errors {errors}"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"order": 0}, r"order must be an int in \[1, 3\], got 0"),
        ({"order": 4}, r"order must be an int in \[1, 3\], got 4"),
        ({"order": True}, r"order must be an int in \[1, 3\], got True"),
        ({"order": 2.0}, r"order must be an int in \[1, 3\], got 2.0"),
        ({"orders": 3}, r"orders must be None or a sequence"),
        ({"orders": "321"}, r"orders must be None or a sequence"),
        ({"orders": [3, 0]}, r"orders entries must be an int in \[1, 3\], got 0"),
        ({"orders": [3, 2.0]}, r"orders entries must be an int in \[1, 3\], got 2.0"),
    ],
)
def test_bad_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        make_solver("dpm_solver", **options)


def test_orders_of_the_wrong_length_raise():
    gm = all_targets(0)["gaussian_1d"]
    sigmas = fastdiff.get_sigmas("karras", 4, SIGMA_MIN, SIGMA_MAX)
    for orders in ([3, 3, 3], [3, 3, 3, 3, 3]):
        with pytest.raises(ValueError, match=r"orders must have one entry per step of the grid \(4\)"):
            fastdiff.sample(gm.denoiser, start(gm, SIGMA_MAX, 0), sigmas, "dpm_solver", orders=orders)


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"eta": 0.5}, NotImplementedError, "eta"),
        ({"n": 0}, ValueError, "n must be >= 1"),
        ({"sigma_min": 0.0}, ValueError, "sigma_min must be a positive"),
        ({"sigma_max": -1.0}, ValueError, "sigma_max must be a positive"),
        ({"sigma_min": 90.0}, ValueError, "sigma_min must be below sigma_max"),
    ],
)
def test_sample_dpm_fast_bad_arguments_raise(arguments, error, message):
    gm = all_targets(0)["gaussian_1d"]
    call = {"sigma_min": SIGMA_MIN, "sigma_max": SIGMA_MAX, "n": 6, **arguments}
    with pytest.raises(error, match=message):
        sampling.sample_dpm_fast(gm.denoiser, start(gm, SIGMA_MAX, 0), **call)


def test_sample_dpm_solver_is_the_solver():
    gm = all_targets(1)["ring_2d"]
    sigmas = fastdiff.get_sigmas("karras", 6, SIGMA_MIN, SIGMA_MAX)
    x = start(gm, SIGMA_MAX, 2)
    for options in ({"order": 2}, {"orders": [1, 2, 3, 3, 2, 1]}):
        ours = sampling.sample_dpm_solver(gm.denoiser, x, sigmas, disable=True, **options)
        assert torch.equal(ours, fastdiff.sample(gm.denoiser, x, sigmas, "dpm_solver", **options))


@pytest.mark.parametrize("order", [1, 2, 3])
def test_flow_grid_from_infinity(order):
    """From t = 1 (sigma = inf) on a flow model of a Gaussian the samples converge to the exact ODE map's output."""
    gm = GaussianMixture.gaussian([0.5, -1.0], torch.diag(torch.tensor([0.16, 0.64], dtype=torch.float64)))
    model = FlowDenoiser(gm.flow_velocity)
    n = torch.randn(256, 2, generator=torch.Generator().manual_seed(order), dtype=torch.float64)
    exact = gm.flow_ode_solution(n, 1.0, 0.0)
    errors = []
    for steps in (8, 32):
        t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        sigmas = (t / (1.0 - t)).tolist()
        out = fastdiff.sample(model, n, sigmas, "dpm_solver", order=order)
        assert bool(torch.isfinite(out).all())
        errors.append(float((out - exact).abs().max()))
    assert errors[1] < errors[0] / 2


def test_sample_dpm_fast_signature_extends_kdiffusion():
    """k-diffusion's parameters, in order, with the same names, kinds and defaults; `backend` after, with a default."""
    theirs = list(inspect.signature(K.sample_dpm_fast).parameters.values())
    ours = list(inspect.signature(sampling.sample_dpm_fast).parameters.values())
    assert [(p.name, p.kind, p.default) for p in ours[: len(theirs)]] == [(p.name, p.kind, p.default) for p in theirs]
    assert [p.name for p in ours[len(theirs) :]] == ["backend"]
