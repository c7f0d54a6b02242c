"""ComfyUI's sampler coordinates <-> fastdiff's variance-exploding ones, exactly.

ComfyUI hands a sampler function `(model, x, sigmas)` in the coordinates of the model's sampling type (the
`model_sampling` object, a mix of a schedule class and one of `comfy.model_sampling`'s types):

- CONST (rectified flow: SD3, Flux, Wan, ...): `sigmas` are the flow times t (1.0 first for a full run), x is the flow
  state x_t = (1 - t) x0 + t n. fastdiff's state is x = x_t / (1 - t) at sigma = t / (1 - t); t = 1 is sigma = inf,
  where the state is the unit noise x_t itself (docs/ALGORITHMS.md section 14).
- EPS and the types built on it (V_PREDICTION, EDM, X0, IMG_TO_IMG, and LCM-style subclasses): x = x0 + sigma n
  already, k-diffusion's convention, which is fastdiff's.

Every other type is refused by name, COSMOS_RFLOW among them. The model `model(x, sigma, **extra_args)` returns the
denoised x0 in every case, so only the state and the noise level change coordinates.
"""

from __future__ import annotations

import math

import torch

from fastdiff.flow_time import flow_t_to_sigma

FLOW = "flow"
VE = "ve"
# The first of these names in the MRO of the model_sampling object decides its coordinates.
SAMPLING_TYPES = {"CONST": FLOW, "EPS": VE}


def model_sampling_of(model: object) -> object:
    """The `model_sampling` object of the model ComfyUI passes to a sampler function: the patched one,
    `model.inner_model.model_patcher.get_model_object("model_sampling")`, as ComfyUI's own SDE samplers read it, else
    `model.inner_model.inner_model.model_sampling`, where ComfyUI's samplers test for CONST."""
    inner = getattr(model, "inner_model", None)
    patcher = getattr(inner, "model_patcher", None)
    if patcher is not None and hasattr(patcher, "get_model_object"):
        return patcher.get_model_object("model_sampling")
    base = getattr(inner, "inner_model", None)
    if base is not None and hasattr(base, "model_sampling"):
        return base.model_sampling
    raise TypeError(
        "model must be the model ComfyUI passes to a sampler function, with "
        "model.inner_model.model_patcher.get_model_object('model_sampling') or model.inner_model.inner_model.model_sampling, "
        f"got {type(model).__name__}"
    )


def sampling_kind(model_sampling: object) -> str:
    """FLOW for CONST, VE for EPS and its subclasses; any other sampling type raises ValueError naming it."""
    names = [cls.__name__ for cls in type(model_sampling).__mro__]
    for name in names:
        if name in SAMPLING_TYPES:
            return SAMPLING_TYPES[name]
    bases = ", ".join(n for n in names if n != "object")
    raise ValueError(
        f"model_sampling type {bases} is not supported: fastdiff converts CONST (flow) and EPS, V_PREDICTION, EDM, X0, "
        "IMG_TO_IMG (x = x0 + sigma noise) coordinates only"
    )


def solver_grid(kind: str, comfy_sigmas: list[float]) -> list[float]:
    """fastdiff's sigmas of ComfyUI's grid (host floats): t / (1 - t) with t = 1 -> inf for flow, as given for VE."""
    if kind == VE:
        return list(comfy_sigmas)
    for i, t in enumerate(comfy_sigmas):
        if not 0.0 <= t <= 1.0:
            raise ValueError(f"sigmas of a CONST (flow) model are flow times in [0, 1], got sigmas[{i}] = {t}")
    return [flow_t_to_sigma(t) for t in comfy_sigmas]


def to_solver_state(kind: str, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """ComfyUI's state at fastdiff's sigma (a host float) as fastdiff's: x_t / (1 - t) = x_t (1 + sigma) for flow
    (x_t itself at sigma = inf), x for VE."""
    if kind == VE or math.isinf(sigma):
        return x
    return x * (1.0 + sigma)


def from_solver_state(kind: str, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """fastdiff's state at sigma (a host float) in ComfyUI's coordinates: x / (1 + sigma) for flow, x for VE."""
    if kind == VE or math.isinf(sigma):
        return x
    return x / (1.0 + sigma)


def flow_time(sigma: torch.Tensor) -> torch.Tensor:
    """t = sigma / (1 + sigma) of a sigma tensor on its device, 1 exactly at sigma = inf (no host sync)."""
    return torch.where(torch.isinf(sigma), torch.ones_like(sigma), sigma / (1.0 + sigma))


def flow_state(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """x_t = x / (1 + sigma) per sample (sigma a [B] or 0-d tensor), x itself where sigma = inf (no host sync)."""
    s = sigma.reshape(sigma.shape + (1,) * (x.ndim - sigma.ndim)) if sigma.ndim else sigma
    return torch.where(torch.isinf(s), x, x / (1.0 + s))
