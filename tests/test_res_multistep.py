"""RES multistep (`res_multistep`, `res_multistep_ancestral`): ComfyUI's `sample_res_multistep` /
`sample_res_multistep_ancestral` to float64 rounding with the same noise, the measured orders (ODE order for the
deterministic rule, weak order on exact output laws for the ancestral one), the counter noise on every backend, and
the options. The ODE order of `res_multistep` is fitted in tests/test_ode_order.py."""

from __future__ import annotations

import inspect
import math
import types

import pytest
import torch
from backend_params import backend_params
from test_er_sde import (
    COV1,
    COVD,
    MU1,
    MUD,
    SIGMA_MAX,
    SIGMA_MIN,
    TARGETS,
    assert_same_intervals,
    comfy,  # noqa: F401 (the fixture)
    compare_with_comfyui,
    kl_slope,
    replayed_counter_noise,
    start,
)

import fastdiff
from fastdiff import sampling
from fastdiff.solvers import make_solver

COMFY_FUNCTIONS = {"res_multistep": "sample_res_multistep", "res_multistep_ancestral": "sample_res_multistep_ancestral"}
# eta = 2 makes sigma_down 0 on the coarse steps (eta^2 (1 - sigma'^2/sigma^2) >= 1): a first-order step to D and no
# history for the next step
VARIANTS = [
    ("res_multistep", {}),
    ("res_multistep_ancestral", {}),
    ("res_multistep_ancestral", {"eta": 0.5, "s_noise": 0.7}),
    ("res_multistep_ancestral", {"eta": 2.0}),
    ("res_multistep_ancestral", {"eta": 0.0}),
    ("res_multistep_ancestral", {"s_noise": 0.0}),
]


@pytest.mark.parametrize(("name", "options"), VARIANTS, ids=str)
@pytest.mark.parametrize("grid", ["karras", "logsnr"])
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_equals_comfyuis_res_multistep_with_the_same_noise(comfy, name, options, grid, target):  # noqa: F811
    """Same start, same normals (ComfyUI calls its noise_sampler once per step on (sigma, sigma'), also where it scales
    the noise by 0; ours draws only where it adds noise): equal to float64 rounding (measured 1.3e-13 at most) at 2, 3,
    8 and 20 steps."""
    theirs = types.SimpleNamespace(comfy=comfy, function=getattr(comfy.k_sampling, COMFY_FUNCTIONS[name]))
    for steps in (2, 3, 8, 20):
        ours, result, our_calls, their_calls = compare_with_comfyui(theirs, name, options, options, target, grid, steps)
        if make_solver(name, **options).stochastic:
            assert_same_intervals(our_calls, their_calls)
        else:
            assert our_calls == [] and len(their_calls) == steps - 1
        torch.testing.assert_close(ours, result, rtol=0, atol=1e-10)


def test_the_multistep_correction_is_used():
    """From the second step on, the update differs from the first-order step (ancestral Euler) by the phi_2 term."""
    sigmas = fastdiff.get_sigmas("karras", 6, SIGMA_MIN, SIGMA_MAX)
    x, denoiser = start("mixture"), TARGETS["mixture"].denoiser
    ours = fastdiff.sample(denoiser, x, sigmas, "res_multistep_ancestral", eta=0.5, seed=1)
    first_order = fastdiff.sample(denoiser, x, sigmas, "euler_ancestral", eta=0.5, seed=1)
    assert float((ours - first_order).abs().max()) > 1e-3


@pytest.mark.parametrize("grid", ["karras", "logsnr"])
@pytest.mark.parametrize("options", [{}, {"eta": 0.5}], ids=str)
def test_weak_order_on_the_exact_output_law(options, grid):
    """Slopes of log KL over 32, 64, 128 steps, 1-D target (8-D in brackets), Karras / logsnr: eta = 1 -4.46 (-4.44) /
    -4.16 (-4.16), eta = 0.5 -4.24 (-4.24) / -4.05 (-4.05); over 64..256 steps (8-D) -4.21 / -4.09 and -4.10 / -4.03.
    Asserted within 0.5 of the declared weak order."""
    order = make_solver("res_multistep_ancestral", **options).order
    for target in ((MU1, COV1), (MUD, COVD)):
        assert abs(kl_slope("res_multistep_ancestral", (32, 64, 128), grid, target, **options) + 2 * order) <= 0.5


@pytest.mark.parametrize(("backend", "device"), backend_params())
def test_counter_noise_on_every_backend(backend, device):
    """seed= gives the same sample on every backend (float64: to rounding) and the same as the counter Gaussians
    of (step i, stage 0) fed through a noise_sampler."""
    sigmas = fastdiff.get_sigmas("karras", 6, SIGMA_MIN, SIGMA_MAX)
    x, seeds = start("mixture", batch=3), [3, 2**63 + 9, 11]
    denoiser = TARGETS["mixture"].denoiser
    name = "res_multistep_ancestral"
    reference = fastdiff.sample(denoiser, x, sigmas, name, seed=seeds, backend="reference", eta=0.5)
    replay = replayed_counter_noise(x, sigmas, seeds, lambda step, s, s_next: 0)
    through_sampler = fastdiff.sample(denoiser, x, sigmas, name, noise_sampler=replay, eta=0.5)
    torch.testing.assert_close(through_sampler, reference, rtol=1e-12, atol=1e-12)
    fused = fastdiff.sample(denoiser, x.to(device), sigmas.to(device), name, seed=seeds, backend=backend, eta=0.5)
    torch.testing.assert_close(fused.cpu(), reference, rtol=1e-12, atol=1e-12)
    assert not torch.equal(reference, fastdiff.sample(denoiser, x, sigmas, name, seed=[4, 5, 6], eta=0.5))


@pytest.mark.parametrize(
    "name, options, exc, match",
    [
        ("res_multistep_ancestral", {"eta": -1.0}, ValueError, "eta"),
        ("res_multistep_ancestral", {"eta": math.inf}, ValueError, "eta"),
        ("res_multistep_ancestral", {"s_noise": math.nan}, ValueError, "s_noise"),
        ("res_multistep_ancestral", {"s_noise": "1"}, TypeError, "s_noise"),
        ("res_multistep", {"eta": 0.5}, TypeError, "unknown option"),
        ("res_multistep", {"s_noise": 1.0}, TypeError, "unknown option"),
    ],
)
def test_bad_options_are_refused_by_name(name, options, exc, match):
    with pytest.raises(exc, match=match):
        make_solver(name, **options)


@pytest.mark.parametrize("name", sorted(COMFY_FUNCTIONS))
def test_the_sampler_functions_follow_comfyuis_signature(comfy, name):  # noqa: F811
    """The ancestral function takes ComfyUI's parameters in order with its names and defaults; the deterministic one
    its parameters up to `disable` (ComfyUI's s_noise and noise_sampler do nothing there: its eta is 0)."""
    theirs = list(inspect.signature(getattr(comfy.k_sampling, COMFY_FUNCTIONS[name])).parameters.values())
    ours = list(inspect.signature(getattr(sampling, COMFY_FUNCTIONS[name])).parameters.values())
    if name == "res_multistep":
        theirs = theirs[: [p.name for p in theirs].index("disable") + 1]
    assert [(p.name, p.default) for p in ours[: len(theirs)]] == [(p.name, p.default) for p in theirs]
    x, sigmas = start("mixture"), fastdiff.get_sigmas("karras", 5, SIGMA_MIN, SIGMA_MAX)
    denoiser = TARGETS["mixture"].denoiser
    options = {"eta": 0.5, "s_noise": 0.7, "seed": 1} if name == "res_multistep_ancestral" else {}
    via_function = getattr(sampling, COMFY_FUNCTIONS[name])(denoiser, x, sigmas, **options)
    assert torch.equal(via_function, fastdiff.sample(denoiser, x, sigmas, name, **options))
