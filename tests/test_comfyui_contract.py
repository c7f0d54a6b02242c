"""The ComfyUI sampler adapter against minimal stand-ins for what it touches (no ComfyUI needed): the sampler
signature, exact coordinates for flow (CONST) and EPS models, seeds, callbacks, denoise < 1, inpainting masks,
inference mode, refused sampling types and `register()`."""

from __future__ import annotations

import inspect
import sys
import types

import pytest
import torch

import fastdiff
from fastdiff.integrations.comfyui import SAMPLER_NAMES, register, sampler_function, samplers
from fastdiff.solvers import make_solver
from fastdiff.toy import GaussianMixture

TARGET = GaussianMixture.ring(k=4, radius=3.0, std=0.5)
FLOW_GRID = [1.0, 0.8, 0.55, 0.3, 0.1, 0.0]
VE_GRID = [20.0, 6.0, 2.0, 0.7, 0.2, 0.0]


# Stand-ins named as comfy.model_sampling's types: the adapter reads the type from the MRO's class names.
class CONST:
    """Flow: ComfyUI's sigma is the flow time t."""


class EPS:
    """x = x0 + sigma noise."""


class V_PREDICTION(EPS):  # noqa: N801 (ComfyUI's name)
    pass


class COSMOS_RFLOW:  # noqa: N801 (ComfyUI's name)
    pass


class ModelSampling:
    """The schedule half of ComfyUI's model_sampling (sigma_max), mixed with a type below."""

    sigma_max = 1.0


def flow_x0(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The exact denoised x0 = x_t - t v of the target at (x_t, t)."""
    return x_t - t.reshape(-1, 1) * TARGET.flow_velocity(x_t, t)


class Patcher:
    def __init__(self, model_sampling):
        self.model_sampling = model_sampling

    def get_model_object(self, name):
        assert name == "model_sampling"
        return self.model_sampling


class StandInModel:
    """What ComfyUI passes a sampler: `model(x, sigma, denoise_mask=, model_options=, seed=)` returning x0, with
    `model.inner_model.model_patcher.get_model_object("model_sampling")`. Records every call."""

    def __init__(self, sampling_type: type, denoised):
        model_sampling = type("ModelSampling", (ModelSampling, sampling_type), {})()
        self.inner_model = types.SimpleNamespace(model_patcher=Patcher(model_sampling))
        self.denoised = denoised
        self.calls = []

    def __call__(self, x, sigma, denoise_mask=None, model_options=None, seed=None):
        self.calls.append({"x": x.clone(), "sigma": sigma.clone(), "seed": seed, "model_options": model_options})
        return self.denoised(x, sigma)


def flow_model():
    return StandInModel(CONST, flow_x0)


def eps_model():
    return StandInModel(V_PREDICTION, TARGET.denoiser)


def noise(batch: int = 6, seed: int = 0) -> torch.Tensor:
    return torch.randn(batch, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


def flow_euler(x_t: torch.Tensor, grid: list[float]) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Euler in flow coordinates, x_t' = x_t + (t' - t)(x_t - x0)/t, with the states and x0 of every step."""
    states, denoised = [], []
    for t, t_next in zip(grid[:-1], grid[1:], strict=True):
        x0 = flow_x0(x_t, torch.full((x_t.shape[0],), t, dtype=x_t.dtype))
        states.append(x_t)
        denoised.append(x0)
        x_t = x_t + (t_next - t) * (x_t - x0) / t
    return x_t, states, denoised


def test_sampler_names_and_signature():
    stochastic = [solver for solver in fastdiff.SOLVERS if make_solver(solver).stochastic]
    assert SAMPLER_NAMES == (*("fastdiff_" + solver for solver in fastdiff.SOLVERS),
                             *(f"fastdiff_{solver}_brownian" for solver in stochastic))
    assert "fastdiff_srk_brownian" in SAMPLER_NAMES and "fastdiff_euler_brownian" not in SAMPLER_NAMES
    parameters = inspect.signature(sampler_function("euler")).parameters
    assert [(p.name, p.default) for p in parameters.values()] == [
        ("model", inspect.Parameter.empty), ("x", inspect.Parameter.empty), ("sigmas", inspect.Parameter.empty),
        ("extra_args", None), ("callback", None), ("disable", None)]
    with pytest.raises(ValueError, match="'nope'"):
        sampler_function("nope")
    with pytest.raises(TypeError, match="bogus"):
        sampler_function("euler", bogus=1)


def test_flow_euler_is_flow_coordinate_euler_from_t_1():
    x = noise()
    model = flow_model()
    out = sampler_function("euler")(model, x, torch.tensor(FLOW_GRID, dtype=torch.float64), extra_args={"seed": 3})
    expected, _, _ = flow_euler(x, FLOW_GRID)
    torch.testing.assert_close(out, expected, rtol=1e-13, atol=1e-13)
    first = model.calls[0]
    assert torch.equal(first["x"], x) and torch.equal(first["sigma"], torch.ones(6, dtype=torch.float64))  # t = 1 exactly
    assert [call["sigma"][0].item() for call in model.calls] == pytest.approx(FLOW_GRID[:-1], rel=1e-15)
    assert out.dtype == x.dtype


def test_eps_dpmpp_2m_is_fastdiff_on_the_same_grid():
    x = noise() * VE_GRID[0]
    out = sampler_function("dpmpp_2m")(eps_model(), x, torch.tensor(VE_GRID, dtype=torch.float64))
    expected = fastdiff.sample(TARGET.denoiser, x, VE_GRID, "dpmpp_2m")
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("make_model, grid", [(flow_model, FLOW_GRID), (eps_model, VE_GRID)])
def test_seeds_per_sample_and_passed_on(make_model, grid):
    sampler = sampler_function("euler_ancestral")
    sigmas = torch.tensor(grid, dtype=torch.float64)
    x = noise(5) * (1.0 if make_model is flow_model else grid[0])
    model = make_model()
    batch = sampler(model, x, sigmas, extra_args={"seed": 11})
    assert all(call["seed"] == 11 for call in model.calls)  # as ComfyUI's own samplers pass extra_args
    smaller = sampler(make_model(), x[:3], sigmas, extra_args={"seed": 11})
    torch.testing.assert_close(smaller, batch[:3], rtol=0, atol=0)  # sample k does not depend on the batch size
    alone = sampler(make_model(), x[:1], sigmas, extra_args={"seed": 11})
    torch.testing.assert_close(alone, batch[:1], rtol=0, atol=0)
    other = sampler(make_model(), x, sigmas, extra_args={"seed": 12})
    assert (other - batch).abs().min() > 0  # every sample's noise changes with the seed
    torch.manual_seed(5)
    unseeded = sampler(make_model(), x, sigmas, extra_args={})
    torch.manual_seed(5)
    torch.testing.assert_close(sampler(make_model(), x, sigmas), unseeded, rtol=0, atol=0)  # fastdiff's default


def test_flow_callback_once_per_step_in_comfyui_coordinates():
    x = noise()
    sigmas = torch.tensor(FLOW_GRID, dtype=torch.float64)
    seen = []
    sampler_function("euler")(flow_model(), x, sigmas, callback=seen.append)
    _, states, denoised = flow_euler(x, FLOW_GRID)
    assert [info["i"] for info in seen] == list(range(len(FLOW_GRID) - 1))
    for i, info in enumerate(seen):
        assert set(info) == {"x", "i", "sigma", "sigma_hat", "denoised"}
        assert info["sigma"].item() == FLOW_GRID[i] and info["sigma_hat"].item() == pytest.approx(FLOW_GRID[i], rel=1e-15)
        torch.testing.assert_close(info["x"], states[i], rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(info["denoised"], denoised[i], rtol=1e-13, atol=1e-13)
    assert torch.equal(seen[0]["x"], x) and seen[0]["sigma_hat"].item() == 1.0


def test_eps_callback_is_fastdiffs():
    x = noise() * VE_GRID[0]
    seen, expected = [], []
    sampler_function("heun")(eps_model(), x, torch.tensor(VE_GRID, dtype=torch.float64), callback=seen.append)
    fastdiff.sample(TARGET.denoiser, x, VE_GRID, "heun", callback=expected.append)
    assert len(seen) == len(expected) == len(VE_GRID) - 1
    for got, want in zip(seen, expected, strict=True):
        assert got["i"] == want["i"] and got["sigma"].item() == VE_GRID[got["i"]]
        torch.testing.assert_close(got["x"], want["x"], rtol=0, atol=1e-14)
        torch.testing.assert_close(got["denoised"], want["denoised"], rtol=0, atol=1e-14)


def test_denoise_below_one():
    x0 = TARGET.sample(6, torch.Generator().manual_seed(1))
    n = noise()
    flow_grid = [0.6, 0.35, 0.15, 0.0]  # ComfyUI noised the image to t = 0.6 already
    x_t = (1 - flow_grid[0]) * x0 + flow_grid[0] * n
    model = flow_model()
    out = sampler_function("euler")(model, x_t, torch.tensor(flow_grid, dtype=torch.float64))
    torch.testing.assert_close(out, flow_euler(x_t, flow_grid)[0], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(model.calls[0]["x"], x_t, rtol=1e-15, atol=1e-15)
    assert model.calls[0]["sigma"][0].item() == pytest.approx(0.6, rel=1e-15)
    ve_grid = VE_GRID[2:]  # below sigma_max
    x = x0 + ve_grid[0] * n
    out = sampler_function("dpmpp_2m")(eps_model(), x, torch.tensor(ve_grid, dtype=torch.float64))
    torch.testing.assert_close(out, fastdiff.sample(TARGET.denoiser, x, ve_grid, "dpmpp_2m"), rtol=0, atol=1e-14)


class Inpaint:
    """ComfyUI's KSamplerX0Inpaint in miniature: the known region (mask 0) of x is replaced by the latent noised to
    sigma (model_sampling.noise_scaling) and of x0 by the latent."""

    def __init__(self, inner, latent, noise, scaling):
        self.inner_model = inner.inner_model
        self.inner, self.latent, self.noise, self.scaling = inner, latent, noise, scaling

    def __call__(self, x, sigma, denoise_mask, model_options=None, seed=None):
        keep = 1.0 - denoise_mask
        x = x * denoise_mask + self.scaling(sigma.reshape(-1, 1), self.noise, self.latent) * keep
        return self.inner(x, sigma, model_options=model_options, seed=seed) * denoise_mask + self.latent * keep


@pytest.mark.parametrize("make_model, grid", [(flow_model, FLOW_GRID), (eps_model, VE_GRID)])
def test_inpainting_mask_keeps_the_known_region(make_model, grid):
    flow = make_model is flow_model
    latent = TARGET.sample(6, torch.Generator().manual_seed(2))
    n = noise()
    mask = torch.tensor([[1.0, 0.0]], dtype=torch.float64).expand(6, 2)  # the second coordinate is known
    scaling = (lambda s, z, x0: s * z + (1 - s) * x0) if flow else (lambda s, z, x0: x0 + s * z)
    model = Inpaint(make_model(), latent, n, scaling)
    x = scaling(torch.tensor(grid[0], dtype=torch.float64), n, latent)
    out = sampler_function("dpmpp_2m")(model, x, torch.tensor(grid, dtype=torch.float64),
                                       extra_args={"denoise_mask": mask, "model_options": {}, "seed": 0})
    assert torch.equal(out[:, 1], latent[:, 1])
    assert (out[:, 0] - latent[:, 0]).abs().min() > 0


def test_under_inference_mode():
    x = noise()
    sigmas = torch.tensor(FLOW_GRID, dtype=torch.float64)
    with torch.inference_mode():
        out = sampler_function("srk")(flow_model(), x, sigmas, extra_args={"seed": 1})
    torch.testing.assert_close(out, sampler_function("srk")(flow_model(), x, sigmas, extra_args={"seed": 1}), rtol=0, atol=0)
    assert torch.isfinite(out).all()


def test_float32_model_gets_its_dtypes():
    x = noise().float()
    model = flow_model()
    out = sampler_function("dpmpp_2m")(model, x, torch.tensor(FLOW_GRID))
    assert out.dtype == torch.float32 and all(c["x"].dtype == c["sigma"].dtype == torch.float32 for c in model.calls)
    torch.testing.assert_close(out.double(), flow_model_dpmpp_2m(x.double()), rtol=1e-5, atol=1e-5)


def flow_model_dpmpp_2m(x):
    return sampler_function("dpmpp_2m")(flow_model(), x, torch.tensor(FLOW_GRID, dtype=torch.float64))


def test_unsupported_sampling_types_refused_by_name():
    model = StandInModel(COSMOS_RFLOW, TARGET.denoiser)
    with pytest.raises(ValueError, match="COSMOS_RFLOW"):
        sampler_function("euler")(model, noise(), torch.tensor(VE_GRID))
    with pytest.raises(TypeError, match="model_sampling"):
        sampler_function("euler")(TARGET.denoiser, noise(), torch.tensor(VE_GRID))
    with pytest.raises(ValueError, match=r"sigmas\[0\] = 2.0"):
        sampler_function("euler")(flow_model(), noise(), torch.tensor([2.0, 0.5, 0.0]))


def test_register_adds_the_samplers(monkeypatch):
    k_sampling = types.ModuleType("comfy.k_diffusion.sampling")
    samplers = types.ModuleType("comfy.samplers")
    samplers.KSAMPLER_NAMES = ["euler", "dpmpp_2m"]
    samplers.SAMPLER_NAMES = samplers.KSAMPLER_NAMES + ["ddim"]
    samplers.KSampler = type("KSampler", (), {"SAMPLERS": samplers.SAMPLER_NAMES})
    samplers.k_diffusion_sampling = k_sampling
    comfy = types.ModuleType("comfy")
    comfy.samplers, comfy.k_diffusion = samplers, types.ModuleType("comfy.k_diffusion")
    comfy.k_diffusion.sampling = k_sampling
    for name, module in {"comfy": comfy, "comfy.samplers": samplers, "comfy.k_diffusion": comfy.k_diffusion,
                         "comfy.k_diffusion.sampling": k_sampling}.items():
        monkeypatch.setitem(sys.modules, name, module)
    assert register() == SAMPLER_NAMES
    register()  # twice: still once each
    assert samplers.KSAMPLER_NAMES == ["euler", "dpmpp_2m", *SAMPLER_NAMES]
    assert samplers.SAMPLER_NAMES == ["euler", "dpmpp_2m", "ddim", *SAMPLER_NAMES]
    assert samplers.KSampler.SAMPLERS is samplers.SAMPLER_NAMES
    function = k_sampling.sample_fastdiff_dpmpp_2m  # what comfy.samplers.ksampler(name) looks up
    x = noise()
    torch.testing.assert_close(function(flow_model(), x, torch.tensor(FLOW_GRID, dtype=torch.float64)),
                               flow_model_dpmpp_2m(x), rtol=0, atol=0)


class HostReads(torch.Tensor):
    """A grid tensor that counts its reads to the host."""

    reads = 0

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.tolist, torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.__float__):
            cls.reads += 1
        return super().__torch_function__(func, types, args, kwargs or {})


def test_grid_read_to_the_host_once():
    sigmas = torch.tensor(FLOW_GRID, dtype=torch.float64).as_subclass(HostReads)
    HostReads.reads = 0
    out = sampler_function("dpmpp_2m")(flow_model(), noise(), sigmas, callback=lambda info: None)
    assert HostReads.reads == 1
    torch.testing.assert_close(out.as_subclass(torch.Tensor), flow_model_dpmpp_2m(noise()), rtol=0, atol=0)


@pytest.mark.parametrize("solver", ["sa_solver", "sa_solver_pece"])
def test_sa_solver_takes_its_noise_window_from_the_model(solver, monkeypatch):
    """ComfyUI's sample_sa_solver without tau_func puts the noise on the model's percent_to_sigma(0.2) .. (0.8): on a
    flow model the flow times 0.8 .. 0.2, i.e. fastdiff's sigma 4 .. 0.25; options given to the sampler win."""
    seen = []
    real = samplers.sample
    monkeypatch.setattr(samplers, "sample", lambda *a, **options: seen.append(options) or real(*a, **options))
    model = flow_model()
    sampling = model.inner_model.model_patcher.get_model_object("model_sampling")
    sampling.percent_to_sigma = lambda percent: 1.0 - percent  # CONST: the flow time of that percent
    sampler_function(solver)(model, noise(), torch.tensor(FLOW_GRID, dtype=torch.float64), extra_args={"seed": 1})
    assert seen[-1]["sde_start_sigma"] == pytest.approx(4.0) and seen[-1]["sde_end_sigma"] == pytest.approx(0.25)
    sampler_function(solver, sde_start_sigma=2.0)(model, noise(), torch.tensor(FLOW_GRID, dtype=torch.float64))
    assert seen[-1]["sde_start_sigma"] == 2.0 and seen[-1]["sde_end_sigma"] == pytest.approx(0.25)
    euler = []
    monkeypatch.setattr(samplers, "sample", lambda *a, **options: euler.append(options) or real(*a, **options))
    sampler_function("euler")(model, noise(), torch.tensor(FLOW_GRID, dtype=torch.float64))
    assert "sde_start_sigma" not in euler[-1]
