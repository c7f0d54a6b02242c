"""Flow-time coordinates (`fastdiff.models.FlowTimeDenoiser`, docs/ALGORITHMS.md section 27): a rectified-flow model
stepped in its own (x_t, t) with the solver's sigma := t and D_t = x_t - t v, ComfyUI's CONST convention.

(a) ComfyUI's own euler, heun, lms, ipndm, deis and dpmpp_2m on a CONST / discrete-flow model sampling (shift 3) are
fastdiff's same solvers through FlowTimeDenoiser on the same t grid, to 1e-10 in float64, on fastdiff's flow grid and
on ComfyUI's own "simple" schedule. Both start at t = 1 exactly: these ComfyUI samplers do not move the first sigma
(only its SNR-based samplers do, by `offset_first_sigma_for_snr`, to percent_to_sigma(1e-4)), and its KSampler's
CONST noise scaling t n + (1 - t) latent is the unit noise n there; the models are evaluated at the same times.
ComfyUI's DEIS runs with fastdiff's coefficients (tests/test_deis.py shows its own quadrature differs by ~1e-4 and
converges to them). (b) The wrapper's conversions are FlowDenoiser's at the same point; (c) `fastdiff.sample` refuses
stochastic solvers with it; (d) bad inputs; and euler / heun converge to the exact flow map at their order.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from peer_targets import start, targets
from test_deis import fastdiff_coefficient_list

import fastdiff
from fastdiff.models import FlowDenoiser, FlowTimeDenoiser, flow_t_to_sigma, flow_to_ve, sigma_to_flow_t
from fastdiff.solvers import SOLVERS, make_solver
from fastdiff.toy import GaussianMixture

F64 = torch.float64
TARGETS = targets(seed=6)
SHIFT = 3.0
COMFY_SOLVERS = {  # fastdiff name -> (ComfyUI's function with its defaults, fastdiff's options that make it that)
    "euler": ("sample_euler", {}),
    "heun": ("sample_heun", {}),
    "lms": ("sample_lms", {}),
    "ipndm": ("sample_ipndm", {"denoise_to_zero": True}),  # ComfyUI's step to 0 is x' = D (README, peer differences)
    "deis": ("sample_deis", {}),
    "dpmpp_2m": ("sample_dpmpp_2m", {}),
}
STOCHASTIC = [name for name in SOLVERS if make_solver(name).stochastic]
DETERMINISTIC = [name for name in SOLVERS if not make_solver(name).stochastic]


def flow_grid(steps: int) -> torch.Tensor:
    """fastdiff's flow grid in t (1 -> 0), the documented recipe."""
    return sigma_to_flow_t(fastdiff.get_sigmas("flow", steps, shift=SHIFT))


class Recorder:
    """A velocity model `v(x_t, t)` of a `GaussianMixture` that records the times it is called at."""

    def __init__(self, gm: GaussianMixture):
        self.gm, self.times = gm, []

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.times.append(float(t[0]))
        return self.gm.flow_velocity(x_t, t)


def comfy_flow_sampling(comfy):
    """ComfyUI's model sampling of a flow model (Flux / SD3 kind): CONST outputs on the discrete-flow schedule."""
    ms = comfy.model_sampling
    sampling = type("FlowSampling", (ms.CONST, ms.ModelSamplingDiscreteFlow), {})()
    sampling.set_parameters(shift=SHIFT)
    return sampling


@pytest.mark.parametrize("grid_kind", ["fastdiff", "comfyui_simple"])
@pytest.mark.parametrize("steps", [3, 5, 10])
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("solver", COMFY_SOLVERS)
def test_matches_comfyui_on_a_flow_model(comfy, monkeypatch, solver, target, steps, grid_kind):
    gm = TARGETS[target]
    sampling = comfy_flow_sampling(comfy)
    if grid_kind == "fastdiff":
        ts = flow_grid(steps)
    else:
        ts = comfy.samplers.calculate_sigmas(sampling, "simple", steps).to(F64)
    assert ts[0] == 1.0 and ts[-1] == 0.0
    noise = start(gm, 1.0, seed=steps)
    x = sampling.noise_scaling(ts[0], noise, torch.zeros_like(noise))  # the unit noise at t = 1
    assert torch.equal(x, noise)

    theirs_model = Recorder(gm)

    def comfy_model(x_t, t, **extra_args):  # ComfyUI's own CONST conversion: D = x_t - t v
        return sampling.calculate_denoised(t, theirs_model(x_t, t), x_t)

    if solver == "deis":
        from comfy.k_diffusion import deis

        monkeypatch.setattr(deis, "get_deis_coeff_list", fastdiff_coefficient_list)
    function, options = COMFY_SOLVERS[solver]
    theirs = getattr(comfy.k_sampling, function)(comfy_model, x.clone(), ts.clone(), disable=True)

    ours_model = Recorder(gm)
    ours = fastdiff.sample(FlowTimeDenoiser(ours_model), x.clone(), ts, solver, **options)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
    assert theirs_model.times[0] == ours_model.times[0] == 1.0
    np.testing.assert_allclose(ours_model.times, theirs_model.times, rtol=1e-14, atol=0)


def test_differs_from_the_same_solver_in_ve_coordinates():
    """lms in flow time extrapolates d x_t / dt in t, through FlowDenoiser d x / dsigma in sigma: another method."""
    gm = TARGETS["ring_2d"]
    sigmas = fastdiff.get_sigmas("flow", 6, shift=SHIFT)
    n = start(gm, 1.0, seed=1)
    in_t = fastdiff.sample(FlowTimeDenoiser(gm.flow_velocity), n, sigma_to_flow_t(sigmas), "lms")
    in_sigma = fastdiff.sample(FlowDenoiser(gm.flow_velocity), n, sigmas, "lms")
    assert not torch.allclose(in_t, in_sigma, rtol=1e-4, atol=1e-4)


def test_grid_recipe_is_exact_at_the_ends_and_decreasing():
    for steps in (1, 4, 28):
        sigmas = fastdiff.get_sigmas("flow", steps, shift=SHIFT)
        ts = sigma_to_flow_t(sigmas)
        assert ts[0] == 1.0 and ts[-1] == 0.0 and bool((ts[1:] < ts[:-1]).all())
        torch.testing.assert_close(flow_t_to_sigma(ts[1:-1]), sigmas[1:-1], rtol=1e-13, atol=0)


# ----------------------------------------------------------------- (b) the conversions
class LinearNet:
    """A fixed random affine 'network' out = A x_t (1 + t) + b t, recording the times it sees."""

    def __init__(self, dim: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.a = torch.randn(dim, dim, generator=g, dtype=F64)
        self.b = torch.randn(dim, generator=g, dtype=F64)
        self.times = []

    def __call__(self, x_t: torch.Tensor, t: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
        self.times.append(t)
        tt = t.to(x_t.dtype)[:, None]
        return scale * ((x_t @ self.a.T.to(x_t.dtype)) * (1 + tt) + self.b.to(x_t.dtype) * tt)


@pytest.mark.parametrize("prediction", ["velocity", "x0", "eps"])
@pytest.mark.parametrize("time_scale", [1.0, 1000.0])
def test_conversions_are_flow_denoisers_at_the_same_point(prediction, time_scale):
    g = torch.Generator().manual_seed(11)
    x_t = torch.randn(7, 4, generator=g, dtype=F64)
    t = torch.rand(7, generator=g, dtype=F64)
    t[0] = 0.0
    if prediction != "eps":
        t[1] = 1.0  # sigma = inf for FlowDenoiser, whose state there is x_t itself
    net = LinearNet(4, seed=2)
    ours = FlowTimeDenoiser(net, prediction=prediction, time_scale=time_scale)(x_t, t, scale=0.5)
    torch.testing.assert_close(net.times[-1], t * time_scale, rtol=1e-15, atol=0)
    theirs = FlowDenoiser(net, prediction=prediction, time_scale=time_scale)(flow_to_ve(x_t, t), flow_t_to_sigma(t), scale=0.5)
    torch.testing.assert_close(net.times[-1], t * time_scale, rtol=1e-15, atol=0)
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)
    out, tt = net(x_t, t * time_scale, scale=0.5), t[:, None]
    formula = {"velocity": x_t - tt * out, "x0": out, "eps": (x_t - tt * out) / (1 - tt)}[prediction]
    torch.testing.assert_close(ours, formula, rtol=1e-14, atol=1e-14)


@pytest.mark.parametrize("prediction", ["velocity", "x0", "eps"])
def test_exact_model_gives_the_posterior_mean(prediction):
    """On a Gaussian mixture every prediction kind gives E[x0 | x_t] = D(x_t / (1 - t), t / (1 - t))."""
    gm = TARGETS["gaussian_8d"]
    g = torch.Generator().manual_seed(5)
    x_t = torch.randn(6, gm.dim, generator=g, dtype=F64)
    t = torch.rand(6, generator=g, dtype=F64) * 0.98 + 0.01

    def net(x_t, t):
        v = gm.flow_velocity(x_t, t)
        tt = t[:, None]
        return {"velocity": v, "x0": x_t - tt * v, "eps": x_t + (1 - tt) * v}[prediction]

    out = FlowTimeDenoiser(net, prediction=prediction)(x_t, t)
    torch.testing.assert_close(out, gm.denoiser(x_t / (1 - t[:, None]), t / (1 - t)), rtol=1e-10, atol=1e-10)


def test_dtypes_and_sigma_forms():
    gm = TARGETS["ring_2d"]
    x_t = start(gm, 1.0, seed=3)[:5]
    wrapper = FlowTimeDenoiser(gm.flow_velocity)
    full = wrapper(x_t, torch.full((5,), 0.4, dtype=F64))
    assert torch.equal(wrapper(x_t, 0.4), full) and torch.equal(wrapper(x_t, torch.tensor(0.4, dtype=F64)), full)
    half = FlowTimeDenoiser(lambda x, t: gm.flow_velocity(x, t).float())(x_t.float(), 0.4)
    assert half.dtype == torch.float32
    torch.testing.assert_close(half.double(), full, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------- (c) the guard
@pytest.mark.parametrize("solver", STOCHASTIC)
def test_sample_refuses_stochastic_solvers(solver):
    gm = TARGETS["ring_2d"]
    x = start(gm, 1.0, seed=0)
    with pytest.raises(ValueError, match=rf"solver '{solver}' is stochastic.*use FlowDenoiser for stochastic sampling"):
        fastdiff.sample(FlowTimeDenoiser(gm.flow_velocity), x, flow_grid(4), solver, seed=0)
    fastdiff.sample(FlowDenoiser(gm.flow_velocity), x, fastdiff.get_sigmas("flow", 4, shift=SHIFT), solver, seed=0)


def test_guard_reads_the_solver_instance_with_its_options():
    """euler_ancestral is stochastic by default and an ODE solver at eta = 0: the options decide."""
    gm = TARGETS["ring_2d"]
    x, ts = start(gm, 1.0, seed=0), flow_grid(4)
    wrapper = FlowTimeDenoiser(gm.flow_velocity)
    assert make_solver("euler_ancestral").stochastic and not make_solver("euler_ancestral", eta=0.0).stochastic
    with pytest.raises(ValueError, match=r"solver 'euler_ancestral' with \{'eta': 0.5\} is stochastic"):
        fastdiff.sample(wrapper, x, ts, "euler_ancestral", eta=0.5)
    ode = fastdiff.sample(wrapper, x, ts, "euler_ancestral", eta=0.0)
    torch.testing.assert_close(ode, fastdiff.sample(wrapper, x, ts, "euler"), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("solver", DETERMINISTIC)
def test_every_deterministic_solver_converges(solver):
    """Four times the steps cut the error to the exact flow map by 3x or more (measured 3.4x to 33x)."""
    gm = TARGETS["gaussian_8d"]
    x = start(gm, 1.0, seed=2)
    exact = gm.flow_ode_solution(x, 1.0, 0.0)
    coarse, fine = (
        float((fastdiff.sample(FlowTimeDenoiser(gm.flow_velocity), x, flow_grid(n), solver) - exact).abs().max())
        for n in (12, 48)
    )
    assert fine < coarse / 3, (coarse, fine)


# ----------------------------------------------------------------- (d) bad inputs
def test_bad_inputs():
    gm = TARGETS["ring_2d"]
    x_t = start(gm, 1.0, seed=4)[:6]
    wrapper = FlowTimeDenoiser(gm.flow_velocity)
    for bad, shown in ((1.5, "1.5"), (math.inf, "inf"), (-0.1, "-0.1"), (math.nan, "nan")):
        with pytest.raises(ValueError, match=rf"sigma must lie in \[0, 1\] \(flow time.*got {shown}"):
            wrapper(x_t, bad)
    with pytest.raises(ValueError, match=r"sigma must lie in \[0, 1\].*got 1.25"):
        wrapper(x_t, torch.tensor([0.5, 1.25, 0.2, 0.3, 0.4, 0.5], dtype=F64))
    with pytest.raises(ValueError, match=r"sigma must lie in \[0, 1\].*got inf"):  # a VE flow grid passed as is
        fastdiff.sample(wrapper, x_t, fastdiff.get_sigmas("flow", 4, shift=SHIFT), "euler")
    with pytest.raises(TypeError, match="sigma must be a float, a 0-d tensor or a \\[B\\] tensor, got str"):
        wrapper(x_t, "0.5")
    with pytest.raises(ValueError, match=r"sigma must be a float, a 0-d tensor or a \[B\] = \[6\] tensor"):
        wrapper(x_t, torch.full((3,), 0.5))
    eps_model = FlowTimeDenoiser(lambda x, t: x, prediction="eps")
    with pytest.raises(ValueError, match=r"FlowTimeDenoiser with prediction='eps' has no denoiser at sigma = t = 1"):
        eps_model(x_t, torch.tensor([0.5, 1.0, 0.2, 0.3, 0.4, 0.5]))
    assert torch.isfinite(eps_model(x_t, 0.999)).all()
    with pytest.raises(ValueError, match=r"prediction must be one of \('velocity', 'x0', 'eps'\), got 'v'"):
        FlowTimeDenoiser(gm.flow_velocity, prediction="v")
    with pytest.raises(TypeError, match="model must be callable as model"):
        FlowTimeDenoiser("net")
    with pytest.raises(ValueError, match="time_scale must be a positive finite number, got 0"):
        FlowTimeDenoiser(gm.flow_velocity, time_scale=0)
    with pytest.raises(ValueError, match=r"FlowTimeDenoiser's model must return a tensor shaped like x \(6, 2\), got \(6,\)"):
        FlowTimeDenoiser(lambda x, t: t)(x_t, 0.5)
    with pytest.raises(TypeError, match="FlowTimeDenoiser's model must return a floating-point tensor, got dtype torch.int64"):
        FlowTimeDenoiser(lambda x, t: x.long())(x_t, 0.5)


# ----------------------------------------------------------------- convergence
@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_converges_to_the_exact_flow_map_at_the_solvers_order(solver):
    """Uniform grids in t from 1 to 0.05 (ending above 0, so every step is the solver's own) against the Gaussian's
    exact flow map; the log-log slope is the declared order within 0.2 (measured 0.97 and 2.00)."""
    gm = TARGETS["gaussian_8d"]
    x = start(gm, 1.0, seed=9)
    exact = gm.flow_ode_solution(x, 1.0, 0.05)
    steps = [8, 16, 32, 64]
    wrapper = FlowTimeDenoiser(gm.flow_velocity)
    errors = [
        float((fastdiff.sample(wrapper, x, torch.linspace(1.0, 0.05, n + 1, dtype=F64), solver) - exact).abs().max())
        for n in steps
    ]
    fitted = -np.polyfit(np.log(steps), np.log(errors), 1)[0]
    declared = make_solver(solver).order
    assert abs(fitted - declared) <= 0.2, f"order {fitted:.3f}, errors {errors}"

