"""DEIS tAB (`fastdiff/solvers/deis.py`, docs/ALGORITHMS.md section 22) against ComfyUI's own `sample_deis` with its
default deis_mode "tab" (the vendored comfy/k_diffusion/sampling.py and deis.py) in float64 on exact denoisers.

ComfyUI computes the coefficients C_j = int L_j(t) dsigma with a 10^4-point rectangle rule in VP time (an O(1/N)
error) and beta_d, beta_min of EDM's VP schedule in float32 (log(1 + 0.002^2) loses ~1% of beta_min to rounding);
fastdiff integrates the same polynomials exactly with float64 constants. So the tests show that (1) ComfyUI's
coefficients, with its constants in float64, converge to fastdiff's (Richardson extrapolation of N and 2N leaves
~1e-9 of the largest coefficient), (2) ComfyUI's own sampler loop given fastdiff's coefficients is fastdiff's to
1e-10, and (3) ComfyUI's unchanged function differs from fastdiff's by the coefficient error only (~1e-4)."""

from __future__ import annotations

import inspect
import math

import comfy_env
import numpy as np
import pytest
import test_ode_order as ode_order
import torch
from peer_targets import start, targets

import fastdiff
from fastdiff import sampling
from fastdiff.solvers import make_solver
from fastdiff.solvers.deis import VP_BETA_D, VP_BETA_MIN, deis_coefficients, vp_time

TARGETS = targets(seed=4)


@pytest.fixture(scope="module")
def comfy():
    env = comfy_env.load()
    from comfy.k_diffusion import deis

    return env, deis



def fastdiff_coefficient_list(t_steps, max_order, deis_mode="tab"):
    """ComfyUI's get_deis_coeff_list (tab) with fastdiff's coefficients: entry i holds step i's, order min(i + 1, max_order)."""
    assert deis_mode == "tab"
    s = [float(v) for v in t_steps]
    return [[] if i == 0 else deis_coefficients(s[i + 1], s[i::-1][: min(i + 1, max_order)]) for i in range(len(s) - 1)]


def comfy_coefficients_float64(deis, sigmas, max_order, n):
    """ComfyUI's coefficients with its VP constants computed in float64 (its torch.tensor(sigma_min) is the default dtype)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return [[float(c.detach()) for c in row] for row in deis.get_deis_coeff_list(sigmas, max_order, N=n)]
    finally:
        torch.set_default_dtype(default)


def test_vp_time_is_comfyui_edm2t_in_float64(comfy):
    _, deis = comfy
    sigmas = fastdiff.get_sigmas("karras", 12, 0.002, 80.0)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        t, beta_0, beta_1 = deis.edm2t(sigmas)
    finally:
        torch.set_default_dtype(default)
    assert math.isclose(float(beta_0), VP_BETA_MIN, rel_tol=1e-10)
    assert math.isclose(float(beta_1 - beta_0), VP_BETA_D, rel_tol=1e-10)
    np.testing.assert_allclose([vp_time(float(s)) for s in sigmas], t.numpy(), rtol=1e-9, atol=0)  # its log(1 + s^2), not log1p
    assert vp_time(80.0) == pytest.approx(1.0, abs=1e-14) and vp_time(0.002) == pytest.approx(1e-3, rel=1e-12)
    _, beta_0_float32, _ = deis.edm2t(sigmas)  # ComfyUI as it runs: beta_min off by ~1% (float32 rounding)
    assert abs(float(beta_0_float32) / VP_BETA_MIN - 1) > 1e-3


@pytest.mark.parametrize("kind, steps", [("karras", 5), ("karras", 32), ("logsnr", 16)])
@pytest.mark.parametrize("max_order", [2, 3, 4])
def test_coefficients_are_comfyui_quadrature_limit(comfy, kind, steps, max_order):
    """ComfyUI's 10^4-point sums are off by O(1/N) (~1e-5 of the largest coefficient); 2 C(2N) - C(N) cancels that
    term and leaves at most 1e-8 (measured 6e-9 on karras 5 steps, 5e-10 on logsnr 16)."""
    _, deis = comfy
    sigmas = fastdiff.get_sigmas(kind, steps, 0.002, 80.0)
    n = 10_000
    coarse = comfy_coefficients_float64(deis, sigmas, max_order, n)
    fine = comfy_coefficients_float64(deis, sigmas, max_order, 2 * n)
    ours = fastdiff_coefficient_list(sigmas, max_order)
    for i in range(1, steps - 1):  # the last step, to sigma = 0, is the denoising step x' = D
        scale = max(abs(c) for c in ours[i])
        extrapolated = [2 * f - c for c, f in zip(coarse[i], fine[i], strict=True)]
        assert max(abs(a - b) for a, b in zip(ours[i], extrapolated, strict=True)) <= 1e-8 * scale, i
        assert max(abs(a - b) for a, b in zip(ours[i], coarse[i], strict=True)) <= 1e-4 * scale, i


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("kind", ["karras", "logsnr"])
@pytest.mark.parametrize("steps", [2, 3, 5, 8, 16])
@pytest.mark.parametrize("max_order", [2, 3, 4])
def test_matches_comfyui_loop(comfy, monkeypatch, target, kind, steps, max_order):
    """ComfyUI's sample_deis, unchanged but for its coefficient list (fastdiff's): grids 80 -> 0.002, then x' = D.
    (Its max_order=1 fails on its history update; test_max_order_1_is_euler covers that.)"""
    env, deis = comfy
    gm = TARGETS[target]
    sigmas = fastdiff.get_sigmas(kind, steps, 0.002, 80.0)
    x = start(gm, 80.0, seed=steps * 10 + max_order)
    ours = sampling.sample_deis(gm.denoiser, x, sigmas, max_order=max_order)
    monkeypatch.setattr(deis, "get_deis_coeff_list", fastdiff_coefficient_list)
    theirs = env.k_sampling.sample_deis(gm.denoiser, x.clone(), sigmas.clone(), disable=True, max_order=max_order)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_matches_comfyui_loop_ending_above_zero(comfy, monkeypatch):
    env, deis = comfy
    gm = TARGETS["ring_2d"]
    sigmas = fastdiff.get_sigmas("karras", 10, 0.05, 20.0)[:-1]
    x = start(gm, 20.0, seed=7)
    ours = sampling.sample_deis(gm.denoiser, x, sigmas)
    monkeypatch.setattr(deis, "get_deis_coeff_list", fastdiff_coefficient_list)
    theirs = env.k_sampling.sample_deis(gm.denoiser, x.clone(), sigmas.clone(), disable=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("kind, steps", [("karras", 4), ("karras", 8), ("logsnr", 6), ("logsnr", 16)])
def test_comfyui_as_it_runs_differs_by_its_coefficients_only(comfy, target, kind, steps):
    """Unchanged ComfyUI (float32 constants, rectangle rule): within 2e-3 of fastdiff on unit-scale targets (measured
    at most 8e-4); the loop itself is shown equal above."""
    env, _ = comfy
    gm = TARGETS[target]
    sigmas = fastdiff.get_sigmas(kind, steps, 0.002, 80.0)
    x = start(gm, 80.0, seed=steps)
    ours = sampling.sample_deis(gm.denoiser, x, sigmas)
    theirs = env.k_sampling.sample_deis(gm.denoiser, x.clone(), sigmas.clone(), disable=True)
    torch.testing.assert_close(ours, theirs, rtol=0.0, atol=2e-3)


def test_max_order_1_is_euler():
    gm = TARGETS["gaussian_8d"]
    sigmas = fastdiff.get_sigmas("karras", 6, 0.002, 80.0)
    x = start(gm, 80.0, seed=1)
    torch.testing.assert_close(
        fastdiff.sample(gm.denoiser, x, sigmas, "deis", max_order=1),
        fastdiff.sample(gm.denoiser, x, sigmas, "euler"),
        rtol=1e-13,
        atol=1e-13,
    )


def test_coefficients_integrate_polynomials_in_vp_time():
    """sum_j C_j p(t_j) = int p(t(s)) ds for p of degree < the number of points (here by an independent composite
    trapezoid rule in sigma on 2*10^5 intervals)."""
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        s = sorted((torch.rand(4, generator=g, dtype=torch.float64) * 20 + 0.01).tolist())  # newest (smallest) first
        s_next = s[0] * float(torch.rand((), generator=g))
        grid = np.linspace(s[0], s_next, 200_001)
        for n in (1, 2, 3, 4):
            c = deis_coefficients(s_next, s[:n])
            t = np.array([vp_time(v) for v in s[:n]])
            p = np.poly1d(torch.randn(n, generator=g, dtype=torch.float64).numpy())
            exact = np.trapezoid(p(np.array([vp_time(v) for v in grid])), grid)
            assert sum(c * p(t)) == pytest.approx(exact, rel=1e-8, abs=1e-10)


def test_signature_extends_comfyui(comfy):
    """ComfyUI's arguments in its order, but for deis_mode (its "rhoab" fails with max_order 3 after three steps)."""
    env, _ = comfy
    theirs = [p for p in inspect.signature(env.k_sampling.sample_deis).parameters.values() if p.name != "deis_mode"]
    ours = list(inspect.signature(sampling.sample_deis).parameters.values())
    assert [(p.name, p.default) for p in ours[: len(theirs)]] == [(p.name, p.default) for p in theirs]


@pytest.mark.parametrize("max_order", [0, 5, 2.0, True, "3"])
def test_bad_max_order_raises(max_order):
    with pytest.raises(ValueError, match="max_order"):
        make_solver("deis", max_order=max_order)


@pytest.mark.parametrize("max_order", [1, 2, 3, 4])
@pytest.mark.parametrize("target", ode_order.TARGETS)
def test_convergence_order(target, max_order):
    """tests/test_ode_order.py's fit. Declared 2 (1 for max_order = 1): the first, Euler, step's O(h^2) local error stays
    in the result. Measured 0.995 / 1.036 (max_order 1), 1.98 / 1.97 (2); with max_order 3 and 4 that error starts where
    the flow is nearly linear in sigma and the slopes on these grids are 2.72 / 2.87 and 2.16 / 2.49, so for them the
    slope is only bounded below."""
    gm = ode_order.TARGETS[target]
    z = torch.randn(64, gm.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = gm.mean + z * gm.cov_at(ode_order.SIGMA_MAX).diagonal().sqrt()
    exact = gm.ode_solution(x, ode_order.SIGMA_MAX, ode_order.SIGMA_MIN)
    errors = [
        float((fastdiff.sample(gm.denoiser, x, ode_order.log_grid(n), "deis", max_order=max_order) - exact).abs().max())
        for n in ode_order.STEPS
    ]
    order = -np.polyfit(np.log(ode_order.STEPS), np.log(errors), 1)[0]
    expected = make_solver("deis", max_order=max_order).order
    assert order >= expected - 0.2, f"order {order:.3f}, errors {errors}"
    if max_order <= 2:
        assert order <= expected + 0.2, f"order {order:.3f}, errors {errors}"
