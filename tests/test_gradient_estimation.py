"""Gradient estimation (`fastdiff/solvers/gradient_estimation.py`, docs/ALGORITHMS.md section 21) against ComfyUI's own
`sample_gradient_estimation` (the vendored comfy/k_diffusion/sampling.py) in float64 on exact denoisers, and its
measured order on the exact probability-flow maps of tests/test_ode_order.py."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import test_ode_order as ode_order
import torch
from peer_targets import start, targets

import fastdiff
from fastdiff import sampling
from fastdiff.solvers import make_solver

TARGETS = targets(seed=5)



@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("kind", ["karras", "logsnr"])
@pytest.mark.parametrize("steps", [2, 3, 5, 8, 16])
@pytest.mark.parametrize("ge_gamma", [2.0, 1.5, 3.0])
def test_matches_comfyui(comfy, target, kind, steps, ge_gamma):
    """Grids 80 -> 0.002, then ComfyUI's denoising step to 0 (x' = D); fresh start per case."""
    gm = TARGETS[target]
    sigmas = fastdiff.get_sigmas(kind, steps, 0.002, 80.0)
    x = start(gm, 80.0, seed=steps)
    ours = sampling.sample_gradient_estimation(gm.denoiser, x, sigmas, ge_gamma=ge_gamma)
    theirs = comfy.k_sampling.sample_gradient_estimation(gm.denoiser, x.clone(), sigmas.clone(), disable=True, ge_gamma=ge_gamma)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_matches_comfyui_ending_above_zero(comfy):
    gm = TARGETS["ring_2d"]
    sigmas = fastdiff.get_sigmas("karras", 10, 0.05, 20.0)[:-1]
    x = start(gm, 20.0, seed=7)
    ours = sampling.sample_gradient_estimation(gm.denoiser, x, sigmas)
    theirs = comfy.k_sampling.sample_gradient_estimation(gm.denoiser, x.clone(), sigmas.clone(), disable=True)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)


def test_gamma_1_is_euler():
    gm = TARGETS["gaussian_8d"]
    sigmas = fastdiff.get_sigmas("karras", 6, 0.002, 80.0)
    x = start(gm, 80.0, seed=1)
    torch.testing.assert_close(
        fastdiff.sample(gm.denoiser, x, sigmas, "gradient_estimation", ge_gamma=1.0),
        fastdiff.sample(gm.denoiser, x, sigmas, "euler"),
        rtol=1e-13,
        atol=1e-13,
    )


def test_signature_extends_comfyui(comfy):
    """ComfyUI's arguments in its order, but for cfg_pp (CFG++ reads the unconditional prediction of a CFG guider)."""
    theirs = [p for p in inspect.signature(comfy.k_sampling.sample_gradient_estimation).parameters.values() if p.name != "cfg_pp"]
    ours = list(inspect.signature(sampling.sample_gradient_estimation).parameters.values())
    assert [(p.name, p.default) for p in ours[: len(theirs)]] == [(p.name, p.default) for p in theirs]


@pytest.mark.parametrize(
    "ge_gamma, error",
    [(-0.5, ValueError), (float("nan"), ValueError), (float("inf"), ValueError), ("2", TypeError), (True, TypeError)],
)
def test_bad_gamma_raises(ge_gamma, error):
    with pytest.raises(error, match="ge_gamma"):
        make_solver("gradient_estimation", ge_gamma=ge_gamma)


@pytest.mark.parametrize("ge_gamma", [2.0, 1.5])
@pytest.mark.parametrize("target", ode_order.TARGETS)
def test_convergence_order(target, ge_gamma):
    """tests/test_ode_order.py's fit: measured 0.96 / 0.89 (gamma = 2, order 1) and 2.00 / 1.97 (gamma = 3/2, order 2)."""
    gm = ode_order.TARGETS[target]
    z = torch.randn(64, gm.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = gm.mean + z * gm.cov_at(ode_order.SIGMA_MAX).diagonal().sqrt()
    exact = gm.ode_solution(x, ode_order.SIGMA_MAX, ode_order.SIGMA_MIN)
    errors = [
        float(
            (fastdiff.sample(gm.denoiser, x, ode_order.log_grid(n), "gradient_estimation", ge_gamma=ge_gamma) - exact).abs().max()
        )
        for n in ode_order.STEPS
    ]
    order = -np.polyfit(np.log(ode_order.STEPS), np.log(errors), 1)[0]
    expected = make_solver("gradient_estimation", ge_gamma=ge_gamma).order
    assert abs(order - expected) <= 0.2, f"order {order:.3f}, expected {expected}, errors {errors}"
