"""ComfyUI nodes: one SAMPLER node per fastdiff solver (its options as widgets), a SIGMAS node for fastdiff's grids
and one for LD3 schedule files. ComfyUI loads this module from the custom node (`custom_node/__init__.py`); it
imports ComfyUI only when a node runs.

Coordinates. For a flow-matching model (ComfyUI's CONST sampling: SD3, Flux, ...) ComfyUI's sigmas are the flow
time t (1.0 first), so the SIGMAS nodes return t = sigma / (1 + sigma) of fastdiff's grid (sigma = inf is t = 1);
for EPS, V_PREDICTION and EDM models they return fastdiff's sigmas unchanged. The samplers convert back
(`fastdiff.integrations.comfyui.samplers`); the solver options that are noise levels (s_tmin, s_tmax) are in
fastdiff's sigma = t / (1 - t) for every model.
"""

from __future__ import annotations

import inspect
import math
import os

import torch

from fastdiff.backends import BACKENDS
from fastdiff.driver import NOISE_KINDS
from fastdiff.flow_time import sigma_to_flow_t
from fastdiff.grids import FLOW, GRIDS, KINDS, get_sigmas
from fastdiff.integrations.comfyui import coordinates
from fastdiff.integrations.comfyui.samplers import sampler_function
from fastdiff.solvers import SOLVERS, make_solver
from fastdiff.solvers.deis import MAX_ORDER as DEIS_MAX_ORDER
from fastdiff.solvers.dpm_solver import MAX_ORDER as DPM_SOLVER_MAX_ORDER
from fastdiff.solvers.dpmpp_2m_sde import SOLVER_TYPES
from fastdiff.solvers.dpmpp_3m import SOLVER_TYPES as DPMPP_3M_TYPES
from fastdiff.solvers.er_sde import MAX_STAGE as ER_SDE_MAX_STAGE
from fastdiff.solvers.er_sde import NOISE_SCALERS
from fastdiff.solvers.ipndm import ADAMS_BASHFORTH
from fastdiff.solvers.ipndm_v import MAX_ORDER as IPNDM_V_MAX_ORDER
from fastdiff.solvers.sa_solver import MAX_ORDER as SA_MAX_ORDER
from fastdiff.solvers.unipc import MAX_SOLVER_ORDER as UNIPC_MAX_ORDER
from fastdiff.solvers.unipc import SOLVER_TYPES as UNIPC_TYPES

SAMPLER_CATEGORY = "sampling/custom_sampling/samplers/fastdiff"
SIGMAS_CATEGORY = "sampling/custom_sampling/schedulers/fastdiff"
BACKEND_CHOICES = ("auto", *BACKENDS)
WIDGET_MAX = 100.0  # the largest value a coefficient widget offers (ComfyUI's own eta / s_noise widgets stop there)
S_TMAX_NO_LIMIT = 1e4  # the s_tmax widget at its maximum means s_tmax = inf, the solvers' default (JSON has no inf)

# Widget bounds of the solvers' options: the ranges their constructors check (fastdiff.validation.check_number's
# default [0, inf) unless a solver narrows it), capped at WIDGET_MAX for the widget.
FLOAT_RANGES = {
    "theta": (0.0, 0.5),  # SRK: check_number(theta, "theta", 0.0, 0.5)
    "eta": (0.0, WIDGET_MAX),
    "s_noise": (0.0, WIDGET_MAX),
    "s_churn": (0.0, WIDGET_MAX),
    "s_tmin": (0.0, S_TMAX_NO_LIMIT),
    "s_tmax": (0.0, S_TMAX_NO_LIMIT),
    # SEEDS' stage fractions: open intervals inside (0, 1), r_1 < r_2; the ends themselves are refused by name
    "r": (0.0, 1.0),
    "r_1": (0.0, 1.0),
    "r_2": (0.0, 1.0),
    # SA-Solver's SDE interval in fastdiff's sigma
    "sde_start_sigma": (0.0, S_TMAX_NO_LIMIT),
    "sde_end_sigma": (0.0, S_TMAX_NO_LIMIT),
}
# Per (solver, option): the integer ranges and the choices the solvers check.
INT_RANGES = {
    ("ipndm", "max_order"): (1, len(ADAMS_BASHFORTH)),
    ("ipndm_v", "max_order"): (1, IPNDM_V_MAX_ORDER),
    ("deis", "max_order"): (1, DEIS_MAX_ORDER),
    ("lms", "order"): (1, 10_000),  # any order >= 1, as k-diffusion's
    ("unipc", "solver_order"): (1, UNIPC_MAX_ORDER),
    ("er_sde", "max_stage"): (1, ER_SDE_MAX_STAGE),
    ("sa_solver", "predictor_order"): (1, SA_MAX_ORDER),
    ("sa_solver", "corrector_order"): (0, SA_MAX_ORDER),
    ("sa_solver_pece", "predictor_order"): (1, SA_MAX_ORDER),
    ("sa_solver_pece", "corrector_order"): (0, SA_MAX_ORDER),
    ("dpm_solver", "order"): (1, DPM_SOLVER_MAX_ORDER),
}
CHOICES = {
    ("dpmpp_2m_sde", "solver_type"): SOLVER_TYPES,
    ("dpmpp_3m", "solver_type"): DPMPP_3M_TYPES,
    ("unipc", "solver_type"): UNIPC_TYPES,
    ("er_sde", "noise_scaler"): NOISE_SCALERS,
}
TOOLTIPS = {
    "noise": "counter: fresh noise per step; brownian: one Brownian path per seed, so changing the step count changes "
    "the image gradually",
    "theta": "SRK's stage fraction of the step in log sigma",
    "eta": "noise amount: 0 is the ODE step, 1 the full ancestral / SDE step",
    "s_noise": "scale of the added noise",
    "s_churn": "EDM churn: total noise added over the run",
    "s_tmin": "churn only at sigma >= s_tmin (fastdiff's sigma; t / (1 - t) for flow models)",
    "s_tmax": f"churn only at sigma <= s_tmax (fastdiff's sigma; {S_TMAX_NO_LIMIT:g} = no limit)",
    "coupled": "couple the stage noises (the strong-order coupling of the SRK step)",
    "solver_type": "the step's variant: DPM++'s second-order correction (midpoint, heun), UniPC's B(h) (bh1, bh2)",
    "max_order": "iPNDM's highest Adams-Bashforth order",
    "backend": "fused-kernel backend: auto picks the fastest for the latent's device",
}


def solver_parameters(solver: str) -> dict[str, inspect.Parameter]:
    """The options of `solver`'s constructor, by name (none for a solver without one)."""
    init = SOLVERS[solver].__init__
    if init is object.__init__:
        return {}
    return {name: p for name, p in inspect.signature(init).parameters.items() if name != "self"}


def option_input(solver: str, name: str, default: object) -> tuple:
    """ComfyUI's input spec of one solver option, from its default's type and the checked range."""
    spec: dict = {"default": default}
    if name in TOOLTIPS:
        spec["tooltip"] = TOOLTIPS[name]
    if (solver, name) in CHOICES:
        return (list(CHOICES[(solver, name)]), spec)
    if isinstance(default, bool):
        return ("BOOLEAN", spec)
    if isinstance(default, int):
        low, high = INT_RANGES.get((solver, name), (0, 10_000))
        return ("INT", {**spec, "min": low, "max": high})
    if isinstance(default, float):
        low, high = FLOAT_RANGES.get(name, (0.0, WIDGET_MAX))
        if math.isinf(default):
            spec["default"] = high
        return ("FLOAT", {**spec, "min": low, "max": high, "step": 0.001, "round": False})
    if isinstance(default, tuple):  # comma-separated ints: unipc's disable_corrector, dpm_solver's orders
        return ("STRING", {**spec, "default": ",".join(str(v) for v in default)})
    raise TypeError(f"option {name!r} has a default of type {type(default).__name__}; no ComfyUI widget for it")


def solver_options(solver: str, values: dict) -> dict:
    """The widget values as `fastdiff.sample` options (s_tmax at its maximum is inf), checked by building the solver:
    a bad value raises naming the option."""
    options = {}
    for name, parameter in solver_parameters(solver).items():
        if name not in values:
            continue
        value = values[name]
        if name == "s_tmax" and isinstance(value, (int, float)) and value >= S_TMAX_NO_LIMIT:
            value = math.inf
        if isinstance(parameter.default, tuple) and isinstance(value, str):
            value = comma_separated_ints(value, name)
        options[name] = value
    unknown = sorted(set(values) - set(options) - {"backend"})
    if unknown:
        raise TypeError(f"solver {solver!r} got unknown option(s) {unknown}; it accepts {list(solver_parameters(solver))}")
    make_solver(solver, **options)
    return options


def comma_separated_ints(text: str, name: str) -> tuple[int, ...]:
    """'0, 3' -> (0, 3); '' -> ()."""
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers, got {text!r}") from None


def check_backend(backend: object) -> str:
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"backend must be one of {BACKEND_CHOICES}, got {backend!r}")
    return backend


def ksampler(solver: str, options: dict, backend: str, noise: str = "counter"):
    """ComfyUI's SAMPLER object running fastdiff's `solver` with `options` on `noise` (imports ComfyUI)."""
    import comfy.samplers

    return comfy.samplers.KSAMPLER(sampler_function(solver, backend=check_backend(backend), noise=noise, **options))


class SolverSamplerNode:
    """A SAMPLER for SamplerCustom / SamplerCustomAdvanced: fastdiff's `SOLVER` with its options."""

    SOLVER = ""
    RETURN_TYPES = ("SAMPLER",)
    FUNCTION = "get_sampler"
    CATEGORY = SAMPLER_CATEGORY

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        required = {name: option_input(cls.SOLVER, name, p.default) for name, p in solver_parameters(cls.SOLVER).items()}
        required["backend"] = (list(BACKEND_CHOICES), {"default": "auto", "tooltip": TOOLTIPS["backend"]})
        if make_solver(cls.SOLVER).stochastic:
            required["noise"] = (list(NOISE_KINDS), {"default": "counter", "tooltip": TOOLTIPS["noise"]})
        return {"required": required}

    def get_sampler(self, backend: str = "auto", noise: str = "counter", **values) -> tuple:
        if noise not in NOISE_KINDS:
            raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
        return (ksampler(self.SOLVER, solver_options(self.SOLVER, values), backend, noise),)


def sampler_node(solver: str) -> type:
    """The SAMPLER node class of one solver."""
    doc = (inspect.getdoc(SOLVERS[solver]) or "").split("\n\n")[0]
    return type(
        f"FastdiffSampler_{solver}",
        (SolverSamplerNode,),
        {"SOLVER": solver, "DESCRIPTION": f"fastdiff's {solver} solver. {doc}", "__doc__": f"SAMPLER node: fastdiff {solver}."},
    )


# ------------------------------------------------------------------------------------------------ grids
def model_sampling(model) -> object:
    """The `model_sampling` object of a ComfyUI MODEL (a ModelPatcher)."""
    return model.get_model_object("model_sampling")


def is_flow(sampling: object) -> bool:
    """Whether ComfyUI samples this model in flow time t (its CONST sampling: x_t = (1 - t) x0 + t eps); a sampling
    type the samplers cannot convert raises, naming it (`coordinates.sampling_kind`)."""
    return coordinates.sampling_kind(sampling) == coordinates.FLOW


def model_flow_shift(sampling: object) -> float:
    """The model's own shift as the factor it applies to sigma = t / (1 - t). ComfyUI's flow samplings
    (ModelSamplingDiscreteFlow, SD3's t -> s t / (1 + (s - 1) t); ModelSamplingFlux, t -> e^mu / (e^mu + 1/t - 1))
    both scale sigma by a constant; read at t = 1/2 (sigma 1) and checked at t = 1/4 (sigma 1/3)."""

    def shifted(t: float) -> float:
        level = float(sampling.percent_to_sigma(1.0 - t))  # the model's flow time for the unshifted time t
        return level / (1.0 - level)

    factor = shifted(0.5)
    if not (math.isfinite(factor) and factor > 0 and math.isclose(shifted(0.25), factor / 3, rel_tol=1e-6)):
        raise ValueError(
            f"the model's flow sampling {type(sampling).__name__} does not scale sigma = t / (1 - t) by a constant; "
            f"set shift (> 0) on the node"
        )
    return factor


def to_model_coordinates(sigmas: torch.Tensor, flow: bool) -> torch.Tensor:
    """fastdiff's sigmas as ComfyUI's: flow time t = sigma / (1 + sigma) (inf is 1.0) for a flow model; float32."""
    return (sigma_to_flow_t(sigmas) if flow else sigmas).to(torch.float32)


def denoise_steps(steps: int, denoise: float) -> int | None:
    """ComfyUI's BasicScheduler rule: a grid of int(steps / denoise) steps whose last `steps` are kept; None at 0."""
    if not 0.0 <= denoise <= 1.0:
        raise ValueError(f"denoise must be in [0, 1], got {denoise}")
    if denoise <= 0.0:
        return None
    return steps if denoise >= 1.0 else int(steps / denoise)


class FastdiffSigmas:
    """fastdiff.get_sigmas for a model, in the model's coordinates.

    kind "flow" (flow models only): n times uniform in t from 1 to 1/n, then 0 (the grid ComfyUI's "simple" scheduler
    spaces), shifted by `shift` as sigma -> shift sigma (0: the model's own shift, set by ModelSamplingSD3 /
    ModelSamplingFlux). The sigma-range kinds run from sigma_max to sigma_min (0: the model's range); for a flow model
    they are in sigma = t / (1 - t), need both ends given, and follow a first level at t = 1 (sigma = inf):
    [1, t(sigma_max), ..., t(sigma_min), 0]."""

    RETURN_TYPES = ("SIGMAS",)
    FUNCTION = "get_sigmas"
    CATEGORY = SIGMAS_CATEGORY
    DESCRIPTION = "fastdiff's noise-level grids (karras, logsnr, flow with shift, ...) in the model's coordinates."

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        level = {"default": 0.0, "min": 0.0, "max": 5000.0, "step": 0.001, "round": False}
        return {
            "required": {
                "model": ("MODEL",),
                "kind": (list(KINDS), {"default": "karras"}),
                "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
                "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01}),
                "sigma_min": ("FLOAT", {**level, "tooltip": "smallest positive level (0: the model's)"}),
                "sigma_max": ("FLOAT", {**level, "tooltip": "largest level (0: the model's)"}),
                "rho": ("FLOAT", {"default": 7.0, "min": 1e-3, "max": 100.0, "step": 0.01, "round": False}),
                "shift": (
                    "FLOAT",
                    {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.01, "round": False,
                     "tooltip": "kind flow: sigma -> shift sigma (SD3: 3); 0 = the model's own shift"},
                ),
            }
        }

    def get_sigmas(self, model, kind, steps, denoise, sigma_min, sigma_max, rho, shift) -> tuple:
        sampling = model_sampling(model)
        return (grid_for(sampling, kind, steps, denoise, sigma_min, sigma_max, rho, shift),)


def grid_for(sampling, kind, steps, denoise=1.0, sigma_min=0.0, sigma_max=0.0, rho=7.0, shift=0.0) -> torch.Tensor:
    """FastdiffSigmas' grid for a model whose ComfyUI `model_sampling` is `sampling`."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    total = denoise_steps(steps, denoise)
    if total is None:
        return torch.zeros(0, dtype=torch.float32)
    flow = is_flow(sampling)
    if kind == FLOW:
        if not flow:
            raise ValueError(
                f"kind='flow' needs a flow-matching model (ComfyUI's CONST sampling), this model samples with "
                f"{type(sampling).__name__}; pick one of {sorted(GRIDS)}"
            )
        factor = model_flow_shift(sampling) if shift == 0 else shift
        sigmas = get_sigmas(FLOW, total, t_min=1.0 / total if total > 1 else None, shift=factor)
    else:
        if shift != 0:
            raise ValueError(f"shift applies only to kind='flow', got shift={shift} with kind={kind!r}")
        if flow:
            if sigma_min == 0 or sigma_max == 0:
                raise ValueError(
                    f"kind={kind!r} on a flow model needs sigma_min and sigma_max in sigma = t / (1 - t) (e.g. 0.002 and 80), "
                    f"got sigma_min={sigma_min}, sigma_max={sigma_max}; or pick kind='flow'"
                )
            zero = torch.zeros(1, dtype=torch.float64)
            tail = get_sigmas(kind, total - 1, sigma_min, sigma_max, rho=rho) if total > 1 else zero
            sigmas = torch.cat([torch.full((1,), math.inf, dtype=torch.float64), tail])  # t = 1 first
        else:
            low = float(sampling.sigma_min) if sigma_min == 0 else sigma_min
            high = float(sampling.sigma_max) if sigma_max == 0 else sigma_max
            sigmas = get_sigmas(kind, total, low, high, rho=rho)
    return to_model_coordinates(sigmas, flow)[-(steps + 1) :]


class FastdiffLD3Schedule:
    """An LD3 schedule file (`fastdiff.ld3.LearnedSchedule.save`): its grid in the model's coordinates and a SAMPLER
    with the solver and options it was learned for. The grid is the bare `schedule.sigmas`: ComfyUI passes one grid,
    so a decoupled schedule's model times are not applied."""

    RETURN_TYPES = ("SIGMAS", "SAMPLER")
    RETURN_NAMES = ("sigmas", "sampler")
    FUNCTION = "load"
    CATEGORY = SIGMAS_CATEGORY
    DESCRIPTION = "A learned (LD3) fastdiff schedule file: its grid and the sampler it was learned for."

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": ("MODEL",),
                "path": ("STRING", {"default": "schedule.json", "tooltip": "JSON file written by fastdiff's LD3"}),
                "backend": (list(BACKEND_CHOICES), {"default": "auto", "tooltip": TOOLTIPS["backend"]}),
            }
        }

    def load(self, model, path, backend="auto") -> tuple:
        from fastdiff.ld3 import LearnedSchedule

        schedule = LearnedSchedule.load(os.path.expanduser(path))
        sigmas = to_model_coordinates(schedule.sigmas, is_flow(model_sampling(model)))
        return sigmas, ksampler(schedule.solver, dict(schedule.solver_options), backend)


SAMPLER_NODES = {solver: sampler_node(solver) for solver in SOLVERS}
NODE_CLASS_MAPPINGS = {
    **{cls.__name__: cls for cls in SAMPLER_NODES.values()},
    "FastdiffSigmas": FastdiffSigmas,
    "FastdiffLD3Schedule": FastdiffLD3Schedule,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    **{cls.__name__: f"fastdiff {solver} sampler" for solver, cls in SAMPLER_NODES.items()},
    "FastdiffSigmas": "fastdiff sigmas",
    "FastdiffLD3Schedule": "fastdiff LD3 schedule",
}
