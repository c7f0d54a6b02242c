"""SA-Solver (`sa_solver`, `sa_solver_pece`): ComfyUI's `sample_sa_solver` / `sample_sa_solver_pece` to float64
rounding with the same noise, its default SDE interval, the exact output law converging at the declared weak order,
the counter noise on every backend, and the options."""

from __future__ import annotations

import inspect
import math
import types

import pytest
import torch
from backend_params import backend_params
from test_er_sde import (
    SIGMA_MAX,
    SIGMA_MIN,
    TARGETS,
    ComfyModel,
    RecordedNoise,
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
from fastdiff.solvers.sa_solver import SDE_END_SIGMA, SDE_START_SIGMA, adams_weights

NAMES = ("sa_solver", "sa_solver_pece")


def sa_solver_in_comfyui(comfyui, name: str, options: dict) -> tuple[types.SimpleNamespace, dict]:
    """ComfyUI's function and its options for ours: the SDE interval and eta become its `tau_func`."""
    from comfy.k_diffusion import sa_solver

    theirs = {k: v for k, v in options.items() if k not in ("eta", "sde_start_sigma", "sde_end_sigma")}
    start_sigma = options.get("sde_start_sigma", SDE_START_SIGMA)
    end_sigma = options.get("sde_end_sigma", SDE_END_SIGMA)
    theirs["tau_func"] = sa_solver.get_tau_interval_func(start_sigma, end_sigma, eta=options.get("eta", 1.0))
    function = getattr(comfyui.k_sampling, f"sample_{name}")
    return types.SimpleNamespace(comfy=comfyui, function=function), theirs


SA_OPTIONS = [
    ("sa_solver", {}), ("sa_solver", {"use_pece": True}), ("sa_solver_pece", {}),
    ("sa_solver", {"simple_order_2": True}), ("sa_solver_pece", {"simple_order_2": True, "predictor_order": 2}),
    ("sa_solver", {"predictor_order": 2, "corrector_order": 2}), ("sa_solver", {"predictor_order": 1, "corrector_order": 0}),
    ("sa_solver", {"corrector_order": 1}), ("sa_solver", {"eta": 0.0}), ("sa_solver", {"s_noise": 0.5, "eta": 2.0}),
    ("sa_solver", {"s_noise": 0.0}), ("sa_solver", {"sde_start_sigma": 100.0, "sde_end_sigma": 0.0}),
    ("sa_solver_pece", {"sde_start_sigma": 5.0, "sde_end_sigma": 0.5, "eta": 0.7}),
    ("sa_solver", {"predictor_order": 6, "corrector_order": 6}),
]


@pytest.mark.parametrize(("name", "options"), SA_OPTIONS, ids=str)
@pytest.mark.parametrize("grid", ["karras", "logsnr"])
@pytest.mark.parametrize("target", sorted(TARGETS))
def test_equals_comfyuis_sa_solver_with_the_same_noise(comfy, name, options, grid, target):  # noqa: F811
    """Same start, same normals (ComfyUI calls its noise_sampler once per step with tau(sigma') > 0, on (sigma,
    sigma'), as ours): equal to 2.0e-14 at most (measured) at 3, 8 and 20 steps up to order 4. At order 6 ComfyUI's
    Vandermonde system in raw lambda loses digits: 3.7e-11 at 20 logsnr steps (ours solves in lambda - lambda')."""
    theirs, their_options = sa_solver_in_comfyui(comfy, name, options)
    tolerance = 1e-10 if max(options.get("predictor_order", 3), options.get("corrector_order", 4)) <= 4 else 1e-9
    for steps in (3, 8, 20):
        ours, result, our_calls, their_calls = compare_with_comfyui(theirs, name, options, their_options, target, grid, steps)
        assert_same_intervals(our_calls, their_calls)
        torch.testing.assert_close(ours, result, rtol=0, atol=tolerance)


def test_default_interval_is_comfyuis_for_an_edm_model(comfy):  # noqa: F811
    """ComfyUI's defaults read percent_to_sigma(0.2) and (0.8) from the model: for an EDM model on [0.002, 80] these
    fastdiff's defaults (to float32 rounding: ComfyUI holds sigma_min, sigma_max in a float32 buffer; 1.4e-8 apart), and
    ComfyUI's sampler with tau_func=None equals ours with the defaults."""
    ms = comfy.model_sampling
    edm = type("VESampling", (ms.EPS, ms.ModelSamplingContinuousEDM), {})()
    edm.set_parameters(SIGMA_MIN, SIGMA_MAX, 1.0)
    assert SDE_START_SIGMA == pytest.approx(edm.percent_to_sigma(0.2), rel=1e-7)
    assert SDE_END_SIGMA == pytest.approx(edm.percent_to_sigma(0.8), rel=1e-7)
    assert 0.0 < SDE_END_SIGMA < 1.0 < SDE_START_SIGMA < SIGMA_MAX
    sigmas = fastdiff.get_sigmas("karras", 10, SIGMA_MIN, SIGMA_MAX)
    x, denoiser = start("mixture"), TARGETS["mixture"].denoiser
    for name, function in (("sa_solver", comfy.k_sampling.sample_sa_solver),
                           ("sa_solver_pece", comfy.k_sampling.sample_sa_solver_pece)):
        model = ComfyModel(comfy, denoiser)
        model.inner_model.model_patcher.model_sampling = edm
        our_noise, their_noise = RecordedNoise(x.shape, 3), RecordedNoise(x.shape, 3)
        ours = fastdiff.sample(denoiser, x.clone(), sigmas, name, noise_sampler=our_noise)
        result = function(model, x.clone(), sigmas, disable=True, noise_sampler=their_noise)
        assert_same_intervals(our_noise.calls, their_noise.calls)
        assert 0 < len(our_noise.calls) < 9  # noise on part of the grid only
        torch.testing.assert_close(ours, result, rtol=0, atol=1e-10)


def test_adams_weights_integrate_polynomials_exactly():
    """b_j over p nodes integrate kappa e^{kappa v} q(v) exactly for every polynomial q of degree < p (checked against
    a 4000-point Simpson rule), on fresh random nodes."""
    g = torch.Generator().manual_seed(5)
    for p in range(1, 7):
        nodes = (-torch.rand(p, generator=g, dtype=torch.float64) * 1.5).tolist()
        h, kappa = 0.3 + float(torch.rand(1, generator=g)), 1.0 + float(torch.rand(1, generator=g)) * 2
        coefficients = torch.randn(p, generator=g, dtype=torch.float64).tolist()

        def q(v, coefficients=coefficients):
            return sum(c * v**m for m, c in enumerate(coefficients))

        v = torch.linspace(-h, 0.0, 4001, dtype=torch.float64)
        f = kappa * torch.exp(kappa * v) * q(v)
        simpson = float((f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum()) * (h / 4000) / 3)
        weights = adams_weights(nodes, h, kappa)
        assert sum(b * q(v_j) for b, v_j in zip(weights, nodes, strict=True)) == pytest.approx(simpson, rel=1e-11, abs=1e-13)


@pytest.mark.parametrize("grid", ["karras", "logsnr"])
@pytest.mark.parametrize(
    ("name", "options"),
    [("sa_solver", {}), ("sa_solver_pece", {}), ("sa_solver", {"sde_start_sigma": 100.0, "sde_end_sigma": 0.0}),
     ("sa_solver", {"predictor_order": 2, "corrector_order": 0}), ("sa_solver", {"predictor_order": 1, "corrector_order": 2}),
     ("sa_solver", {"predictor_order": 1, "corrector_order": 0}), ("sa_solver", {"predictor_order": 2, "corrector_order": 1})],
    ids=str,
)
def test_weak_order_on_the_exact_output_law(name, options, grid):
    """Slopes of log KL over 32, 64, 128 steps on the 1-D target, Karras / logsnr: defaults -4.48 / -4.40, PECE -4.09 /
    -4.20, noise on the whole grid -3.95 / -4.26, predictor 2 without corrector -4.2 / -4.1, predictor 1 with
    corrector 2 -3.7 / -3.9 (weak order 2); predictor 1 alone -1.86 / -1.91, corrector 1 -1.97 / -1.81 (order 1).
    Asserted within 0.6 of -2 x the declared order."""
    order = make_solver(name, **options).order
    assert abs(kl_slope(name, (32, 64, 128), grid, **options) + 2 * order) <= 0.6


@pytest.mark.parametrize(("backend", "device"), backend_params())
@pytest.mark.parametrize("name", NAMES)
def test_counter_noise_on_every_backend(backend, device, name):
    """seed= gives the same sample on every backend (float64: to rounding) and the same as the counter Gaussians
    of (step i, stage 0) fed through a noise_sampler."""
    sigmas = fastdiff.get_sigmas("karras", 8, SIGMA_MIN, SIGMA_MAX)
    x, seeds = start("mixture", batch=3), [3, 2**63 + 9, 11]
    denoiser = TARGETS["mixture"].denoiser
    reference = fastdiff.sample(denoiser, x, sigmas, name, seed=seeds, backend="reference")
    replay = replayed_counter_noise(x, sigmas, seeds, lambda step, s, s_next: 0)
    through_sampler = fastdiff.sample(denoiser, x, sigmas, name, noise_sampler=replay)
    torch.testing.assert_close(through_sampler, reference, rtol=1e-12, atol=1e-12)
    fused = fastdiff.sample(denoiser, x.to(device), sigmas.to(device), name, seed=seeds, backend=backend)
    torch.testing.assert_close(fused.cpu(), reference, rtol=1e-12, atol=1e-12)
    assert not torch.equal(reference, fastdiff.sample(denoiser, x, sigmas, name, seed=[4, 5, 6]))


@pytest.mark.parametrize(
    "options, exc, match",
    [({"predictor_order": 0}, ValueError, "predictor_order"), ({"predictor_order": 7}, ValueError, "predictor_order"),
     ({"predictor_order": 2.0}, ValueError, "predictor_order"), ({"corrector_order": -1}, ValueError, "corrector_order"),
     ({"corrector_order": True}, ValueError, "corrector_order"), ({"eta": -0.5}, ValueError, "eta"),
     ({"eta": math.nan}, ValueError, "eta"), ({"s_noise": "1"}, TypeError, "s_noise"),
     ({"use_pece": 1}, TypeError, "use_pece"), ({"simple_order_2": None}, TypeError, "simple_order_2"),
     ({"sde_start_sigma": -1.0}, ValueError, "sde_start_sigma"), ({"sde_end_sigma": math.inf}, ValueError, "sde_end_sigma")],
)
def test_bad_options_are_refused_by_name(options, exc, match):
    with pytest.raises(exc, match=match):
        make_solver("sa_solver", **options)


def test_pece_takes_no_use_pece_option():
    with pytest.raises(TypeError, match="use_pece"):
        make_solver("sa_solver_pece", use_pece=False)


def test_noise_only_inside_the_sde_interval():
    """tau(sigma') = eta on [sde_end_sigma, sde_start_sigma]: the noise_sampler is called for the steps ending there,
    and not at all for eta = 0, s_noise = 0 or an empty interval (sde_end_sigma > sde_start_sigma, as ComfyUI's tau)."""
    sigmas = fastdiff.get_sigmas("karras", 12, SIGMA_MIN, SIGMA_MAX)
    x, denoiser = start("mixture"), TARGETS["mixture"].denoiser
    noise = RecordedNoise(x.shape, 1)
    fastdiff.sample(denoiser, x, sigmas, "sa_solver", noise_sampler=noise, sde_start_sigma=5.0, sde_end_sigma=0.5)
    assert [s_next for _, s_next in noise.calls] == [s for s in sigmas[1:].tolist() if 0.5 <= s <= 5.0]
    for quiet in ({"eta": 0.0}, {"s_noise": 0.0}, {"sde_start_sigma": 1.0, "sde_end_sigma": 2.0}):
        assert not make_solver("sa_solver", **quiet).stochastic
        silent = RecordedNoise(x.shape, 1)
        fastdiff.sample(denoiser, x, sigmas, "sa_solver", noise_sampler=silent, **quiet)
        assert silent.calls == []


@pytest.mark.parametrize("name", NAMES)
def test_the_sampler_functions_extend_comfyuis_signature(comfy, name):  # noqa: F811
    """ComfyUI's parameters in order with its names and defaults, except `tau_func` (a function in ComfyUI), whose
    place takes `eta`; the SDE interval follows as sde_start_sigma / sde_end_sigma."""
    theirs = list(inspect.signature(getattr(comfy.k_sampling, f"sample_{name}")).parameters.values())
    ours = list(inspect.signature(getattr(sampling, f"sample_{name}")).parameters.values())
    their_names = [p.name for p in theirs]
    tau_at = their_names.index("tau_func")
    assert [p.name for p in ours[: len(theirs)]] == [*their_names[:tau_at], "eta", *their_names[tau_at + 1 :]]
    skip = {"tau_func", "eta", "disable"}  # fastdiff's disable=None shows a bar only on a terminal
    assert [p.default for p in ours[: len(theirs)] if p.name not in skip] == [p.default for p in theirs if p.name not in skip]
    x, sigmas = start("mixture"), fastdiff.get_sigmas("karras", 6, SIGMA_MIN, SIGMA_MAX)
    denoiser = TARGETS["mixture"].denoiser
    via_function = getattr(sampling, f"sample_{name}")(denoiser, x, sigmas, predictor_order=2, s_noise=0.5, seed=1)
    assert torch.equal(via_function, fastdiff.sample(denoiser, x, sigmas, name, predictor_order=2, s_noise=0.5, seed=1))
