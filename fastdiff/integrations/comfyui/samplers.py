"""fastdiff's solvers as ComfyUI sampler functions: `fastdiff_<solver>` in KSampler, KSamplerAdvanced, KSamplerSelect.

A ComfyUI sampler function is `sample(model, x, sigmas, extra_args=None, callback=None, disable=None)`, looked up by
`comfy.samplers.ksampler(name)` as `comfy.k_diffusion.sampling.sample_<name>`. The one made here runs
`fastdiff.sample` in the model's exact coordinates (`coordinates.py`): for a CONST (flow) model ComfyUI's grid of flow
times t becomes sigma = t / (1 - t) (t = 1 -> inf) and x_t becomes x_t / (1 - t); the model is called back at
(x_t, t) = (x / (1 + sigma), sigma / (1 + sigma)), at t = 1 with the state itself, and the sample returns as x_t.
EPS / V_PREDICTION / EDM models are sampled in their own sigmas. `denoise < 1` grids (a first t below 1 or sigma
below sigma_max, x already noised by ComfyUI) are sampled from where they start.

`extra_args` go to the model as ComfyUI's own samplers pass them (`model_options`, `seed`, `denoise_mask`: the model
is ComfyUI's `KSamplerX0Inpaint`, which blends the known region of an inpainting mask). Noise: a stochastic solver's
noise comes from fastdiff's counter stream keyed per sample by `extra_args["seed"]`: sample k gets the k-th SplitMix64
output of the seed (`fastdiff.noise.sample_seeds`), so image k of a batch is the same whatever the batch size, as
ComfyUI's own batch noise (`comfy.sample.prepare_noise`, one generator filling the batch in order); no seed: fastdiff's
default (torch's global generator). `fastdiff_<solver>_brownian` (and `noise="brownian"`) draws the same keys as one
Brownian path per sample (`fastdiff.ops.brownian`): another step count changes the image gradually, and unlike
ComfyUI's Brownian-tree samplers a sample's path does not depend on its batch.
`callback` gets ComfyUI's dict {'x', 'i', 'sigma', 'sigma_hat', 'denoised'} once per
step in ComfyUI's coordinates (x_t and t for flow models). The grid is read to the host once; no step syncs.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fastdiff.driver import sample
from fastdiff.dtypes import working_dtype
from fastdiff.integrations.comfyui.coordinates import (
    FLOW,
    flow_state,
    flow_time,
    from_solver_state,
    model_sampling_of,
    sampling_kind,
    solver_grid,
    to_solver_state,
)
from fastdiff.solvers import SOLVERS, make_solver

PREFIX = "fastdiff_"
BROWNIAN_SUFFIX = "_brownian"
# KSampler's list: every solver, and every stochastic one again on Brownian noise (fastdiff_<solver>_brownian).
SAMPLER_SOLVERS = {
    **{PREFIX + solver: (solver, "counter") for solver in SOLVERS},
    **{PREFIX + solver + BROWNIAN_SUFFIX: (solver, "brownian") for solver in SOLVERS if make_solver(solver).stochastic},
}
SAMPLER_NAMES = tuple(SAMPLER_SOLVERS)
# Options of fastdiff.sample itself; every other option goes to the solver.
_SAMPLE_OPTIONS = ("backend", "check_finite", "noise")

SamplerFunction = Callable[..., torch.Tensor]


class ComfyDenoiser:
    """fastdiff's D(x, sigma) of ComfyUI's `model(x, sigma, **extra_args)` (which returns x0): for flow the model sees
    (x / (1 + sigma), sigma / (1 + sigma)), (x, 1) at sigma = inf; for VE (x, sigma). The model gets x in ComfyUI's
    dtype and sigma in the dtype of ComfyUI's grid."""

    def __init__(self, model: Callable, kind: str, extra_args: dict, x_dtype: torch.dtype, sigma_dtype: torch.dtype):
        self.model = model
        self.kind = kind
        self.extra_args = extra_args
        self.x_dtype = x_dtype
        self.sigma_dtype = sigma_dtype

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        if self.kind == FLOW:
            x, sigma = flow_state(x, sigma), flow_time(sigma)
        return self.model(x.to(self.x_dtype), sigma.to(self.sigma_dtype), **self.extra_args)


def comfy_callback(callback: Callable[[dict], None], kind: str, comfy_sigmas: torch.Tensor, x_dtype: torch.dtype):
    """fastdiff's per-step callback dict turned into ComfyUI's coordinates (x_t, t for flow) before `callback`."""

    def on_step(info: dict) -> None:
        x, sigma_hat = info["x"], info["sigma_hat"]
        if kind == FLOW:
            x, sigma_hat = flow_state(x, sigma_hat), flow_time(sigma_hat)
        callback({
            "x": x.to(x_dtype),
            "i": info["i"],
            "sigma": comfy_sigmas[info["i"]],
            "sigma_hat": sigma_hat.to(comfy_sigmas.dtype),
            "denoised": info["denoised"].to(x_dtype),
        })

    return on_step


# Options whose ComfyUI default comes from the model: SA-Solver's noise window is the model's
# percent_to_sigma(0.2) .. percent_to_sigma(0.8) (ComfyUI's sample_sa_solver without tau_func).
_SA_SOLVERS = ("sa_solver", "sa_solver_pece")


def model_defaults(solver: str, model_sampling: object, kind: str) -> dict:
    """The solver options that ComfyUI derives from the model, in fastdiff's sigmas (given options win over them)."""
    if solver not in _SA_SOLVERS or not hasattr(model_sampling, "percent_to_sigma"):
        return {}
    start, end = solver_grid(kind, [float(model_sampling.percent_to_sigma(0.2)), float(model_sampling.percent_to_sigma(0.8))])
    return {"sde_start_sigma": start, "sde_end_sigma": end}


def sampler_function(solver: str, **options) -> SamplerFunction:
    """A ComfyUI sampler function `(model, x, sigmas, extra_args=None, callback=None, disable=None)` running
    `fastdiff.sample` with `solver` and `options` (the solver's options, plus `backend`, `check_finite` and `noise`)."""
    if not isinstance(solver, str) or solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    make_solver(solver, **{k: v for k, v in options.items() if k not in _SAMPLE_OPTIONS})  # unknown options raise now

    def sample_fastdiff(model, x, sigmas, extra_args=None, callback=None, disable=None):
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a tensor, got {type(x).__name__}")
        if not isinstance(sigmas, torch.Tensor):
            sigmas = torch.as_tensor(sigmas, dtype=torch.float32, device=x.device)
        if extra_args is not None and not isinstance(extra_args, dict):
            raise TypeError(f"extra_args must be a dict or None, got {type(extra_args).__name__}")
        extra_args = {} if extra_args is None else extra_args
        kind = sampling_kind(model_sampling_of(model))
        comfy_grid = sigmas.tolist()  # the one host read of the grid
        if len(comfy_grid) < 2:
            return x
        grid = solver_grid(kind, comfy_grid)
        state = to_solver_state(kind, x.to(working_dtype(x.dtype)), grid[0])
        denoiser = ComfyDenoiser(model, kind, extra_args, x.dtype, sigmas.dtype)
        steps = None if callback is None else comfy_callback(callback, kind, sigmas, x.dtype)
        run_options = {**model_defaults(solver, model_sampling_of(model), kind), **options}
        out = sample(denoiser, state, grid, solver, seed=extra_args.get("seed"), callback=steps,
                     progress=None if disable is None else not disable, **run_options)
        return from_solver_state(kind, out, grid[-1]).to(x.dtype)

    suffix = BROWNIAN_SUFFIX if options.get("noise") == "brownian" else ""
    sample_fastdiff.__name__ = sample_fastdiff.__qualname__ = f"sample_{PREFIX}{solver}{suffix}"
    sample_fastdiff.__doc__ = f"fastdiff's {solver!r} solver as a ComfyUI sampler function (fastdiff.integrations.comfyui)."
    return sample_fastdiff


def register() -> tuple[str, ...]:
    """Add every `fastdiff_*` sampler to ComfyUI: `comfy.k_diffusion.sampling.sample_<name>` (what
    `comfy.samplers.ksampler(name)` looks up) and the names to `KSAMPLER_NAMES`, `SAMPLER_NAMES` (KSamplerSelect) and
    `KSampler.SAMPLERS` (KSampler, KSamplerAdvanced), once each. Runs inside ComfyUI; returns the names."""
    import comfy.k_diffusion.sampling as k_sampling
    import comfy.samplers as comfy_samplers

    modules = {id(k_sampling): k_sampling}
    vendored = getattr(comfy_samplers, "k_diffusion_sampling", None)
    if vendored is not None:
        modules[id(vendored)] = vendored
    for name, (solver, noise) in SAMPLER_SOLVERS.items():
        function = sampler_function(solver, noise=noise)
        for module in modules.values():
            setattr(module, f"sample_{name}", function)
    lists = {}
    for names in (comfy_samplers.KSAMPLER_NAMES, comfy_samplers.SAMPLER_NAMES, comfy_samplers.KSampler.SAMPLERS):
        lists[id(names)] = names  # KSampler.SAMPLERS is SAMPLER_NAMES itself in ComfyUI 0.3: extended once
    for names in lists.values():
        names.extend(name for name in SAMPLER_NAMES if name not in names)
    return SAMPLER_NAMES
