"""The ComfyUI nodes, the custom-node folder and its installer, without ComfyUI: `comfy.samplers` and
`comfy.k_diffusion.sampling` are stand-ins in `sys.modules` (a KSAMPLER that records its sampler function, the sampler
name lists), and the models' `model_sampling` objects are stand-ins of ComfyUI's types (EPS, CONST) with their
documented formulas: SD3's shift t -> s t / (1 + (s - 1) t), Flux's t -> e^mu / (e^mu + 1/t - 1)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch

import fastdiff
from fastdiff.grids import GRIDS
from fastdiff.integrations.comfyui import install, nodes
from fastdiff.integrations.comfyui.samplers import SAMPLER_NAMES
from fastdiff.ld3 import LearnedSchedule
from fastdiff.solvers import SOLVERS, make_solver

CUSTOM_NODE = Path(nodes.__file__).parent / "custom_node"


class KSAMPLER:
    """Stand-in of comfy.samplers.KSAMPLER: keeps the sampler function."""

    def __init__(self, sampler_function, extra_options=None, inpaint_options=None):
        self.sampler_function = sampler_function


@pytest.fixture
def comfy(monkeypatch):
    """Stand-ins of the ComfyUI modules the nodes and `register()` import."""
    package = types.ModuleType("comfy")
    samplers = types.ModuleType("comfy.samplers")
    k_diffusion = types.ModuleType("comfy.k_diffusion")
    k_sampling = types.ModuleType("comfy.k_diffusion.sampling")
    samplers.KSAMPLER = KSAMPLER
    samplers.KSAMPLER_NAMES = ["euler", "heun"]
    samplers.SAMPLER_NAMES = [*samplers.KSAMPLER_NAMES, "ddim"]
    samplers.KSampler = type("KSampler", (), {"SAMPLERS": samplers.SAMPLER_NAMES})
    package.samplers, package.k_diffusion, k_diffusion.sampling = samplers, k_diffusion, k_sampling
    for name, module in [("comfy", package), ("comfy.samplers", samplers), ("comfy.k_diffusion", k_diffusion),
                         ("comfy.k_diffusion.sampling", k_sampling)]:
        monkeypatch.setitem(sys.modules, name, module)
    return types.SimpleNamespace(samplers=samplers, k_sampling=k_sampling)


class EPS:
    """A VE model's sampling (ComfyUI's EPS type) with the sigma range of SD1.5."""

    sigma_min, sigma_max = 0.0292, 14.6146


class CONST:
    pass


class SD3Flow(CONST):
    def __init__(self, shift):
        self.shift = shift

    def percent_to_sigma(self, percent):
        t = 1.0 - percent
        return self.shift * t / (1 + (self.shift - 1) * t)


class FluxFlow(CONST):
    def __init__(self, mu):
        self.mu = mu

    def percent_to_sigma(self, percent):
        t = 1.0 - percent
        return math.exp(self.mu) / (math.exp(self.mu) + 1 / t - 1)


class COSMOS_RFLOW:  # noqa: N801  (ComfyUI's name: a sampling type the adapter refuses)
    pass


class Patcher:
    """Stand-in of ComfyUI's MODEL (a ModelPatcher) as the nodes see it."""

    def __init__(self, sampling):
        self.sampling = sampling

    def get_model_object(self, name):
        assert name == "model_sampling"
        return self.sampling


class SamplerModel:
    """What ComfyUI passes to a sampler function: the exact denoiser x / (1 + sigma^2) of N(0, I), reached like
    KSamplerX0Inpaint (`inner_model.model_patcher`)."""

    def __init__(self, sampling):
        self.inner_model = types.SimpleNamespace(model_patcher=Patcher(sampling))

    def __call__(self, x, sigma, **extra_args):
        return x / (1 + sigma.view(-1, *[1] * (x.ndim - 1)) ** 2)


def exact_denoiser(x, sigma):
    return x / (1 + sigma.view(-1, *[1] * (x.ndim - 1)) ** 2)


# ------------------------------------------------------------------------------------------------ contract
def check_input(name, spec):
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, list):
        assert options["default"] in kind, name
    elif kind in ("FLOAT", "INT"):
        assert options["min"] <= options["default"] <= options["max"], name
        assert isinstance(options["default"], float if kind == "FLOAT" else int), name
    elif kind == "BOOLEAN":
        assert isinstance(options["default"], bool), name
    else:
        assert kind in ("MODEL", "STRING"), name


@pytest.mark.parametrize("node_id", sorted(nodes.NODE_CLASS_MAPPINGS))
def test_every_node_follows_comfyuis_custom_node_contract(node_id):
    cls = nodes.NODE_CLASS_MAPPINGS[node_id]
    inputs = cls.INPUT_TYPES()
    assert set(inputs) == {"required"}
    json.dumps(inputs, allow_nan=False)  # the front end reads the specs as JSON: no inf anywhere
    for name, spec in inputs["required"].items():
        check_input(name, spec)
    assert isinstance(cls.RETURN_TYPES, tuple) and set(cls.RETURN_TYPES) <= {"SAMPLER", "SIGMAS"}
    assert callable(getattr(cls, cls.FUNCTION))
    assert cls.CATEGORY.startswith("sampling/custom_sampling/")
    assert node_id in nodes.NODE_DISPLAY_NAME_MAPPINGS


def test_one_sampler_node_per_solver_with_the_solvers_options_as_widgets():
    assert sorted(nodes.SAMPLER_NODES) == sorted(SOLVERS)
    for solver, cls in nodes.SAMPLER_NODES.items():
        widgets = cls.INPUT_TYPES()["required"]
        noise = ["noise"] if make_solver(solver).stochastic else []  # counter or brownian, for the stochastic solvers
        assert list(widgets) == [*nodes.solver_parameters(solver), "backend", *noise]
        for name, p in nodes.solver_parameters(solver).items():
            default = widgets[name][1]["default"]
            shown = nodes.S_TMAX_NO_LIMIT if p.default == math.inf else p.default
            if isinstance(p.default, tuple):  # step lists are comma-separated strings
                shown = ",".join(str(v) for v in p.default)
                assert nodes.solver_options(solver, {name: "1, 2"})[name] == (1, 2)  # steps or orders
            assert default == shown, (solver, name)


# Options whose range is open or set by another option: SEEDS' fractions (0 < r < 1, 0 < r_1 < r_2 < 1), ER-SDE's eta
# (only with noise_scaler='reverse_sde').
COUPLED_OPTIONS = {("seeds_2", "r"), ("seeds_3", "r_1"), ("seeds_3", "r_2"), ("er_sde", "eta")}


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_widget_bounds_are_the_ranges_the_solver_checks(solver):
    for name, spec in nodes.SAMPLER_NODES[solver].INPUT_TYPES()["required"].items():
        if spec[0] not in ("FLOAT", "INT"):
            continue
        low, high = spec[1]["min"], spec[1]["max"]
        if (solver, name) in COUPLED_OPTIONS:  # the valid values depend on other options: the default is, the ends not
            nodes.solver_options(solver, {name: spec[1]["default"]})
            for value in (low, high):
                with pytest.raises(ValueError, match=name):
                    nodes.solver_options(solver, {name: value})
            continue
        for value in (low, high):
            nodes.solver_options(solver, {name: value})  # both ends accepted
        below = low - 1 if spec[0] == "INT" else low - 1e-9
        with pytest.raises(ValueError, match=name):
            make_solver(solver, **{name: below})
        if (solver, name) in (("srk", "theta"), ("ipndm", "max_order")):  # the bound is the solver's own
            above = high + 1 if spec[0] == "INT" else high + 1e-9
            with pytest.raises(ValueError, match=name):
                make_solver(solver, **{name: above})


def test_s_tmax_at_its_widget_maximum_is_no_limit():
    assert nodes.solver_options("euler", {"s_tmax": nodes.S_TMAX_NO_LIMIT})["s_tmax"] == math.inf
    assert nodes.solver_options("euler", {"s_tmax": 80.0})["s_tmax"] == 80.0


# ------------------------------------------------------------------------------------------------ samplers
def test_the_options_reach_the_sampler_function(comfy, monkeypatch):
    calls = []
    monkeypatch.setattr(nodes, "sampler_function", lambda solver, **options: calls.append((solver, options)) or "fn")
    (made,) = nodes.SAMPLER_NODES["dpmpp_2m_sde"]().get_sampler(eta=0.5, s_noise=0.9, solver_type="heun", backend="reference")
    assert isinstance(made, KSAMPLER) and made.sampler_function == "fn"
    assert calls == [("dpmpp_2m_sde", {"eta": 0.5, "s_noise": 0.9, "solver_type": "heun", "backend": "reference",
                                        "noise": "counter"})]
    nodes.SAMPLER_NODES["srk"]().get_sampler(noise="brownian")
    assert calls[-1][0] == "srk" and calls[-1][1]["noise"] == "brownian"
    with pytest.raises(ValueError, match="noise must be one of"):
        nodes.SAMPLER_NODES["srk"]().get_sampler(noise="tree")


def test_a_node_samples_with_its_options_exactly_as_fastdiff_sample(comfy):
    """The SRK node with theta 0.2, uncoupled, on a VE model: ComfyUI's sampler function gives fastdiff.sample's
    answer with the same options and seed, which differs from the defaults' answer."""
    (made,) = nodes.SAMPLER_NODES["srk"]().get_sampler(theta=0.2, coupled=False, backend="reference")
    sigmas = fastdiff.get_sigmas("karras", 6, 0.03, 14.6).float()
    x = torch.randn(3, 4, generator=torch.Generator().manual_seed(0)) * sigmas[0]
    got = made.sampler_function(SamplerModel(EPS()), x, sigmas, extra_args={"seed": 5})
    want = fastdiff.sample(exact_denoiser, x, sigmas, "srk", seed=5, theta=0.2, coupled=False, backend="reference")
    defaults = fastdiff.sample(exact_denoiser, x, sigmas, "srk", seed=5, backend="reference")
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert not torch.allclose(got, defaults)


@pytest.mark.parametrize(
    "solver, values, name",
    [("srk", {"theta": 0.7}, "theta"), ("dpmpp_2m_sde", {"solver_type": "bogus"}, "solver_type"),
     ("euler_ancestral", {"s_noise": -1.0}, "s_noise"), ("ipndm", {"max_order": 9}, "max_order"),
     ("euler", {"backend": "gpu"}, "backend")],
)
def test_a_bad_value_is_refused_by_name(comfy, solver, values, name):
    with pytest.raises(ValueError, match=name):
        nodes.SAMPLER_NODES[solver]().get_sampler(**values)


def test_an_unknown_option_is_refused_by_name():
    with pytest.raises(TypeError, match="eta"):
        nodes.solver_options("dpmpp_2m", {"eta": 1.0})


# ------------------------------------------------------------------------------------------------ grids
def sigmas_node(sampling, kind, steps, **widgets):
    values = {"denoise": 1.0, "sigma_min": 0.0, "sigma_max": 0.0, "rho": 7.0, "shift": 0.0, **widgets}
    (grid,) = nodes.FastdiffSigmas().get_sigmas(Patcher(sampling), kind, steps, **values)
    return grid


@pytest.mark.parametrize("kind", sorted(GRIDS))
def test_ve_kinds_are_fastdiffs_grids_on_the_models_range(kind):
    got = sigmas_node(EPS(), kind, 10)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, fastdiff.get_sigmas(kind, 10, EPS.sigma_min, EPS.sigma_max).float(), rtol=0, atol=0)
    given = sigmas_node(EPS(), kind, 10, sigma_min=0.1, sigma_max=5.0, rho=3.0)
    torch.testing.assert_close(given, fastdiff.get_sigmas(kind, 10, 0.1, 5.0, rho=3.0).float(), rtol=0, atol=0)


def test_denoise_keeps_the_last_steps_of_a_longer_grid():
    full = fastdiff.get_sigmas("karras", 20, EPS.sigma_min, EPS.sigma_max).float()
    torch.testing.assert_close(sigmas_node(EPS(), "karras", 10, denoise=0.5), full[-11:], rtol=0, atol=0)
    assert sigmas_node(EPS(), "karras", 10, denoise=0.0).numel() == 0


def uniform_to_zero(n):
    return [1 - k / n for k in range(n)]


@pytest.mark.parametrize(
    "sampling, shift_of",
    [(SD3Flow(3.0), lambda t: 3 * t / (1 + 2 * t)), (SD3Flow(1.0), lambda t: t),
     (FluxFlow(1.15), lambda t: math.exp(1.15) / (math.exp(1.15) + 1 / t - 1))],
)
def test_the_flow_grid_is_in_flow_time_from_one_with_the_models_shift(sampling, shift_of):
    """t_k = shift(1 - k/n), k < n, then 0: 1.0 first, what ComfyUI's simple scheduler spaces on these models."""
    got = sigmas_node(sampling, "flow", 8)
    want = torch.tensor([shift_of(t) for t in uniform_to_zero(8)] + [0.0], dtype=torch.float32)
    assert got[0].item() == 1.0 and got[-1].item() == 0.0
    torch.testing.assert_close(got, want, rtol=0, atol=1e-7)


def test_a_shift_on_the_node_replaces_the_models():
    got = sigmas_node(FluxFlow(1.15), "flow", 4, shift=2.0)
    want = torch.tensor([2 * t / (1 + t) for t in uniform_to_zero(4)] + [0.0], dtype=torch.float32)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-7)
    assert sigmas_node(SD3Flow(3.0), "flow", 1).tolist() == [1.0, 0.0]


def test_a_sigma_range_kind_on_a_flow_model_starts_at_t_one():
    got = sigmas_node(SD3Flow(3.0), "logsnr", 5, sigma_min=0.002, sigma_max=80.0)
    levels = fastdiff.get_sigmas("logsnr", 4, 0.002, 80.0)
    want = torch.cat([torch.ones(1, dtype=torch.float64), levels / (1 + levels)]).float()
    torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize(
    "sampling, kind, widgets, match",
    [(EPS(), "flow", {}, "flow-matching model"), (SD3Flow(3.0), "karras", {}, "sigma_min and sigma_max"),
     (EPS(), "karras", {"shift": 3.0}, "shift"), (COSMOS_RFLOW(), "karras", {}, "COSMOS_RFLOW"),
     (EPS(), "karras", {"sigma_min": 20.0}, "sigma_min")],
)
def test_grids_the_model_cannot_take_are_refused(sampling, kind, widgets, match):
    with pytest.raises(ValueError, match=match):
        sigmas_node(sampling, kind, 6, **widgets)


def test_the_ld3_node_gives_the_schedules_grid_and_its_sampler(comfy, monkeypatch, tmp_path):
    schedule = LearnedSchedule(
        solver="ipndm", solver_options={"max_order": 3}, nfe=3, steps=3, evaluations=3, sigma_min=0.01,
        sigma_max=10.0, to_zero=True, decoupled=False, sigma_list=(10.0, 1.0, 0.01, 0.0),
        model_sigma_list=(10.0, 1.0, 0.01, 0.0),
    )
    schedule.save(tmp_path / "s.json")
    calls = []
    monkeypatch.setattr(nodes, "sampler_function", lambda solver, **options: calls.append((solver, options)) or "fn")
    ve, sampler = nodes.FastdiffLD3Schedule().load(Patcher(EPS()), str(tmp_path / "s.json"), "auto")
    torch.testing.assert_close(ve, schedule.sigmas.float(), rtol=0, atol=0)
    assert sampler.sampler_function == "fn" and calls == [("ipndm", {"max_order": 3, "backend": "auto", "noise": "counter"})]
    flow, _ = nodes.FastdiffLD3Schedule().load(Patcher(SD3Flow(3.0)), str(tmp_path / "s.json"), "auto")
    torch.testing.assert_close(flow, torch.tensor([10 / 11, 0.5, 0.01 / 1.01, 0.0]), rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="format"):
        (tmp_path / "bad.json").write_text("{}")
        nodes.FastdiffLD3Schedule().load(Patcher(EPS()), str(tmp_path / "bad.json"), "auto")


# ------------------------------------------------------------------------------------------------ installer
@pytest.fixture
def comfyui(tmp_path):
    root = tmp_path / "ComfyUI"
    (root / "custom_nodes").mkdir(parents=True)
    (root / "comfy").mkdir()
    return root


def node_files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def test_install_copies_the_custom_node_into_custom_nodes_fastdiff(comfyui):
    target = install.install(comfyui)
    assert target == comfyui / "custom_nodes" / "fastdiff"
    assert node_files(target) == node_files(CUSTOM_NODE)
    assert {"__init__.py", "pyproject.toml", "requirements.txt"} <= set(node_files(target))
    assert [p.name for p in (comfyui / "custom_nodes").iterdir()] == ["fastdiff"]  # no staging folder left


def test_an_existing_install_is_refused_unless_overwrite(comfyui):
    target = install.install(comfyui)
    (target / "marker").write_text("mine")
    with pytest.raises(FileExistsError, match="--overwrite"):
        install.install(comfyui)
    assert (target / "marker").read_text() == "mine"
    install.install(comfyui, overwrite=True)
    assert node_files(target) == node_files(CUSTOM_NODE)
    assert [p.name for p in (comfyui / "custom_nodes").iterdir()] == ["fastdiff"]


def test_a_failed_overwrite_puts_the_old_install_back(comfyui, monkeypatch):
    target = install.install(comfyui)
    (target / "marker").write_text("mine")
    real_replace = install.os.replace

    def replace(src, dst):
        if Path(src).name == "fastdiff" and Path(dst) == target:
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr(install.os, "replace", replace)
    with pytest.raises(OSError, match="disk full"):
        install.install(comfyui, overwrite=True)
    assert (target / "marker").read_text() == "mine"
    assert [p.name for p in (comfyui / "custom_nodes").iterdir()] == ["fastdiff"]


@pytest.mark.parametrize("missing", ["custom_nodes", "comfy"])
def test_a_folder_that_is_not_comfyui_is_refused_naming_what_is_missing(comfyui, missing):
    (comfyui / missing).rmdir()
    with pytest.raises(FileNotFoundError, match=f"lacks {missing}/"):
        install.install(comfyui)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        install.install(comfyui / "nowhere")


def test_the_command_line_installs_and_refuses(comfyui, capsys):
    from fastdiff.__main__ import main

    assert main(["comfyui-install", str(comfyui)]) == 0
    assert "custom_nodes" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="--overwrite"):
        main(["comfyui-install", str(comfyui)])
    assert main(["comfyui-install", str(comfyui), "--overwrite"]) == 0
    with pytest.raises(SystemExit, match="lacks"):
        main(["comfyui-install", str(comfyui / "custom_nodes")])


# ------------------------------------------------------------------------------------------------ custom node
def test_the_installed_custom_node_loads_as_comfyui_loads_it(comfy, comfyui):
    """Imported from its folder under a path-derived module name, as ComfyUI's load_custom_node does: it exposes the
    node mappings and registers every fastdiff sampler once in ComfyUI's lists."""
    folder = install.install(comfyui)
    name = str(folder).replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    assert module.NODE_CLASS_MAPPINGS is nodes.NODE_CLASS_MAPPINGS
    assert module.NODE_DISPLAY_NAME_MAPPINGS is nodes.NODE_DISPLAY_NAME_MAPPINGS
    assert comfy.samplers.KSAMPLER_NAMES == ["euler", "heun", *SAMPLER_NAMES]
    assert comfy.samplers.SAMPLER_NAMES == ["euler", "heun", "ddim", *SAMPLER_NAMES]
    assert all(callable(getattr(comfy.k_sampling, f"sample_{n}")) for n in SAMPLER_NAMES)


def test_the_custom_nodes_registry_metadata():
    tomllib = pytest.importorskip("tomllib")
    meta = tomllib.loads((CUSTOM_NODE / "pyproject.toml").read_text())
    assert meta["project"]["version"] == fastdiff.__version__
    assert meta["project"]["dependencies"] == ["fastdiff"]
    assert meta["tool"]["comfy"]["PublisherId"] and meta["tool"]["comfy"]["DisplayName"]
    assert (CUSTOM_NODE / "requirements.txt").read_text().split() == ["fastdiff"]


# ------------------------------------------------------------------------------------------------ real ComfyUI
@pytest.fixture(scope="module")
def real_comfy():
    import comfy_env

    return comfy_env.load()


def comfy_sampling(real_comfy, schedule, kind):
    """ComfyUI's model_sampling object as its model_base builds one: a schedule class mixed with a type."""
    ms = real_comfy.model_sampling
    return type("ModelSampling", (getattr(ms, schedule), getattr(ms, kind)), {})()


@pytest.mark.parametrize("steps", [4, 10, 20])
def test_the_flow_grid_is_comfyuis_simple_scheduler_on_sd3_and_flux(real_comfy, steps):
    sd3 = comfy_sampling(real_comfy, "ModelSamplingDiscreteFlow", "CONST")
    sd3.set_parameters(shift=3.0)
    flux = comfy_sampling(real_comfy, "ModelSamplingFlux", "CONST")  # mu = 1.15, its default
    for sampling in (sd3, flux):
        simple = real_comfy.samplers.calculate_sigmas(sampling, "simple", steps)
        torch.testing.assert_close(nodes.grid_for(sampling, "flow", steps), simple, rtol=0, atol=2.4e-7)  # 2 ulp at 1


def test_the_karras_grid_is_comfyuis_on_an_eps_model(real_comfy):
    sd15 = comfy_sampling(real_comfy, "ModelSamplingDiscrete", "EPS")
    comfy_karras = real_comfy.samplers.calculate_sigmas(sd15, "karras", 10)
    # ComfyUI computes the grid in float32, fastdiff in float64: a few float32 ulp apart
    torch.testing.assert_close(nodes.grid_for(sd15, "karras", 10), comfy_karras, rtol=1e-6, atol=0)


def test_the_nodes_drive_comfyuis_custom_sampler_on_a_flow_model(real_comfy):
    """SamplerCustom's path (comfy.sample.sample_custom) with the SIGMAS and euler nodes on a tiny Flux model: ComfyUI's
    own euler on the same grid, to float32 rounding (the Euler step is the same map in t and in sigma = t / (1 - t))."""
    import comfy_env

    model = comfy_env.flux_model(real_comfy)
    (sigmas,) = nodes.FastdiffSigmas().get_sigmas(model, "flow", 3, 1.0, 0.0, 0.0, 7.0, 0.0)
    (sampler,) = nodes.SAMPLER_NODES["euler"]().get_sampler(s_churn=0.0, s_tmin=0.0, s_tmax=1e4, s_noise=1.0)
    assert isinstance(sampler, real_comfy.samplers.KSAMPLER) and sigmas[0].item() == 1.0
    noise = torch.randn(comfy_env.FLUX_LATENT, generator=torch.Generator().manual_seed(0))
    latent = torch.zeros(comfy_env.FLUX_LATENT)
    positive, negative = comfy_env.conditioning(1, True), comfy_env.conditioning(2, True)
    run = [real_comfy.sample.sample_custom(model, noise, 1.0, s, sigmas, positive, negative, latent, seed=0)
           for s in (sampler, real_comfy.samplers.sampler_object("euler"))]
    torch.testing.assert_close(run[0], run[1], rtol=1e-5, atol=1e-5 * run[1].abs().max().item())
