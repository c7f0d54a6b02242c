"""The fused Itô superposition step (SuperDiff OR / AND with the Itô density estimate), dispatched by backend.

One reverse-SDE step sigma -> sigma' of M superposed denoisers (`fastdiff.reference.ito_step` states the math):
x' = x + Delta sum_i kappa_i s_i + sqrt(Delta) z, ell_i' = ell_i + <x' - x, s_i> - (Delta/2) ||s_i||^2, with
s_i = (D_i - x)/sigma^2 formed on the fly from the denoised outputs (never stored) and z generated in registers
from the counter stream (never stored). What the fused backends do per sample:

- reduction pass: one read of x and every D_i, z regenerated; accumulates e_i = D_i - x statistics
  <e_i, e_j>, <z, e_i> and, for AND, the same for the centred e_i - mean_j e_j (so that nearly equal
  scores lose no precision to cancellation), in per-chunk partial sums (float32; float64 for float64 x).
  For OR the weights are known before the step (softmax of the log-densities), so this same pass also
  writes x': OR is one pass over memory.
- weights: the partial sums of the sample are added in a fixed order (deterministic), and kappa (AND: an
  M x M symmetric positive definite solve) and the ell updates are scalar algebra on them.
- move pass (AND only): a second read of x and the D_i, z regenerated, x' written.

AND solves (Delta C + eps I) a = Q(b - ell) - sqrt(Delta) <z, s - s_bar> + (Delta/2) Q diag(C), kappa = 1/M + a,
with C the centred Gram matrix and Q the centring projector: the same solution as the bordered system of
the reference, written without cancellation. eps = rcond Delta tr(G)/M regularizes nearly equal scores
towards uniform weights (the averaged score, which is the exact answer when the scores coincide).

Backends: "reference" (PyTorch), "cpu" and "cuda" (the compiled `torch.ops.fastdiff.ito_step`), "triton"
(`torch.ops.fastdiff.ito_step_triton`, kernels/ito_step.py). x' comes back row-major in x's dtype; ell' and
kappa in float32 (float64 for float64 x), which is also the dtype ell must have.

The weight algebra is public here as well, for samplers that form the scores themselves: `or_weights`
(softmax(T ell + log w)), `regularization` (eps = rcond Delta tr(G)/M) and `solve_bordered` (the AND system
A kappa - lambda 1 = r, sum kappa = 1); the formulas are written once, in `fastdiff.reference.ito_step`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from fastdiff import _extension
from fastdiff.backends import resolve_backend
from fastdiff.dtypes import working_dtype
from fastdiff.kernels.limits import MAX_MODELS
from fastdiff.ops.arguments import host_float
from fastdiff.ops.philox import CounterNoise
from fastdiff.ops.solver_step import NoiseDraw
from fastdiff.reference import ito_step as reference
from fastdiff.reference.ito_step import or_weights, regularization, solve_bordered
from fastdiff.validation import FLOAT_DTYPES, check_number

__all__ = ["DEFAULT_RCOND", "MAX_MODELS", "MODES", "SUPPORTED_BACKENDS", "ItoStep", "ito_step", "or_weights", "regularization",
           "solve_bordered"]

SUPPORTED_BACKENDS = ("reference", "cpu", "cuda", "triton")
MODES = reference.MODES
DEFAULT_RCOND = 1e-6
_MASK32 = 0xFFFFFFFF


class ItoStep(NamedTuple):
    """Result of one step: the new state (x's dtype), the log-density estimates [B, M] and the weights used [B, M]."""

    x_next: torch.Tensor
    ell_next: torch.Tensor
    kappa: torch.Tensor


def _per_model(name: str, values: Sequence[float] | None, m: int) -> list[float]:
    if values is None:
        return [0.0] * m
    values = list(values)
    if len(values) != m:
        raise ValueError(f"ito_step: {name} needs one entry per model, got {len(values)} for {m} models")
    return [host_float(v, f"{name}[{i}]", "ito_step", finite=True) for i, v in enumerate(values)]


def _check(x, denoised, sigma, sigma_next, ell, noise, mode, rcond) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype not in FLOAT_DTYPES:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"ito_step: x must be a float16, bfloat16, float32 or float64 tensor, got {got}")
    if x.ndim < 1:
        raise ValueError("ito_step: x must have shape [B, ...], got a 0-d tensor")
    if mode not in MODES:
        raise ValueError(f"ito_step: mode must be one of {MODES}, got {mode!r}")
    m = len(denoised)
    lowest = 2 if mode == "and" else 1
    if not lowest <= m <= MAX_MODELS:
        raise ValueError(f"ito_step: mode {mode!r} needs {lowest} to {MAX_MODELS} denoised tensors, got {m}")
    for i, d in enumerate(denoised):
        if not isinstance(d, torch.Tensor) or d.shape != x.shape:
            got = tuple(d.shape) if isinstance(d, torch.Tensor) else type(d).__name__
            raise ValueError(f"ito_step: denoised[{i}] must have x's shape {tuple(x.shape)}, got {got}")
        if d.device != x.device:
            raise ValueError(f"ito_step: denoised[{i}] is on {d.device}, expected x's device {x.device}")
        if d.dtype != x.dtype:
            raise TypeError(f"ito_step: denoised[{i}] has dtype {d.dtype}, expected x's dtype {x.dtype}")
    if not sigma > sigma_next >= 0.0:
        raise ValueError(f"ito_step: needs sigma > sigma_next >= 0, got sigma={sigma}, sigma_next={sigma_next}")
    acc = working_dtype(x.dtype)
    if not isinstance(ell, torch.Tensor) or ell.shape != (x.shape[0], m) or ell.dtype != acc or ell.device != x.device:
        got = f"{ell.dtype} {tuple(ell.shape)} on {ell.device}" if isinstance(ell, torch.Tensor) else type(ell).__name__
        raise ValueError(f"ito_step: ell must be a {acc} tensor of shape [B, M] = [{x.shape[0]}, {m}] on {x.device}, got {got}")
    if not isinstance(noise, NoiseDraw) or not isinstance(noise.source, CounterNoise):
        raise TypeError("ito_step: noise must be a NoiseDraw of a fastdiff.ops.philox.CounterNoise (the Gaussians are generated "
                        f"in the kernels from the counter stream), got {type(getattr(noise, 'source', noise)).__name__}")
    keys = noise.source.keys
    if keys.shape != (x.shape[0],) or keys.device != x.device:
        raise ValueError(f"ito_step: noise needs one seed per sample on {x.device}, got keys of shape {tuple(keys.shape)} "
                         f"on {keys.device}")
    check_number(rcond, "ito_step: rcond", 0.0)


def ito_step(
    x: torch.Tensor,
    denoised: Sequence[torch.Tensor],
    sigma: float,
    sigma_next: float,
    ell: torch.Tensor,
    noise: NoiseDraw,
    mode: str = "or",
    temperature: float = 1.0,
    log_weights: Sequence[float] | None = None,
    bias: Sequence[float] | None = None,
    rcond: float = DEFAULT_RCOND,
    backend: str = "auto",
) -> ItoStep:
    """One superposed Itô step of the denoised outputs `denoised[i] = D_i(x, sigma)`; see the module docstring.

    `log_weights` (OR) and `bias` (AND: the targets ell_i' - bias_i all equal) hold one host float per model;
    `temperature` scales the log-densities in OR's softmax; `rcond` >= 0 is AND's relative regularization.
    """
    denoised = list(denoised)
    sigma, sigma_next, temperature, rcond = (
        host_float(v, name, "ito_step", finite=True)
        for v, name in ((sigma, "sigma"), (sigma_next, "sigma_next"), (temperature, "temperature"), (rcond, "rcond"))
    )
    _check(x, denoised, sigma, sigma_next, ell, noise, mode, rcond)
    log_w = _per_model("log_weights", log_weights, len(denoised))
    offsets = _per_model("bias", bias, len(denoised))
    chosen = resolve_backend(backend, x.device, SUPPORTED_BACKENDS)
    draw = (noise.step & _MASK32, noise.stage & _MASK32, noise.source.stream & _MASK32)
    keys = noise.source.keys
    if chosen == "reference":
        return ItoStep(*reference.ito_step(x, denoised, sigma, sigma_next, ell, keys, draw, mode, temperature, log_w, offsets,
                                           rcond))
    op = torch.ops.fastdiff.ito_step_triton if chosen == "triton" else torch.ops.fastdiff.ito_step
    return ItoStep(*op(x, denoised, sigma, sigma_next, ell, keys, list(draw), MODES.index(mode), temperature, log_w, offsets,
                       rcond))


@torch.library.custom_op("fastdiff::ito_step_triton", mutates_args=())
def _ito_step_triton(
    x: torch.Tensor,
    denoised: list[torch.Tensor],
    sigma: float,
    sigma_next: float,
    ell: torch.Tensor,
    keys: torch.Tensor,
    draw: list[int],
    mode: int,
    temperature: float,
    log_weights: list[float],
    bias: list[float],
    rcond: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    from fastdiff.kernels import ito_step as kernels

    return kernels.ito_step(x, denoised, sigma, sigma_next, ell, keys, tuple(draw), mode, temperature, log_weights, bias, rcond)


def _fake(x, denoised, sigma, sigma_next, ell, keys, draw, mode, temperature, log_weights, bias, rcond):
    return x.new_empty(x.shape), ell.new_empty(ell.shape), ell.new_empty(ell.shape)


_ito_step_triton.register_fake(_fake)

if _extension.loaded() and hasattr(torch.ops.fastdiff, "ito_step"):
    torch.library.register_fake("fastdiff::ito_step")(_fake)
