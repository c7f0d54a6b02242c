"""The generic solver step `x' = a x + sum_i b_i k_i + sum_d c_d z_d`, dispatched by backend.

Every solver in `fastdiff.solvers` expresses its updates through this one primitive, with the
scalars computed on the host in float64. Noise enters as `NoiseDraw` requests rather than
tensors: a draw from the counter stream (`CounterNoise`) becomes (keys, step, stage, stream)
and the fused backends generate its Gaussians in registers, so the step reads each operand once,
writes once and never stores the noise. Other noise (a user's `noise_sampler`) is materialized and
enters as one more stage tensor.

Backends: "reference" (PyTorch), "cpu" and "cuda" (the compiled `torch.ops.fastdiff.solver_step`),
"triton" (`torch.ops.fastdiff.solver_step_triton`, kernels/solver_step.py). float16/bfloat16 are
added in float32 by the fused backends. "auto" takes the compiled kernel of x's device when it is
built. Coefficients are host numbers, never tensors, so a step never syncs with the device. The
fused ops are differentiable: the step is linear, so its gradients are `a g` and `b_i g`. One exception, for
learning the grid itself (`fastdiff.ld3`): on the "reference" backend `a` and `bs` may be 0-d tensors that
require grad, and the step is then plain differentiable PyTorch arithmetic (gradients reach the coefficients too).

Output layout: row-major when there is counter noise (the Gaussians follow the element order);
otherwise the compiled ops keep a dense x's layout (channels-last stays channels-last).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fastdiff import _extension
from fastdiff.backends import resolve_backend
from fastdiff.kernels.limits import MAX_DRAWS
from fastdiff.ops.arguments import host_float
from fastdiff.ops.philox import CounterNoise
from fastdiff.reference import solver_step as reference
from fastdiff.validation import FLOAT_DTYPES

SUPPORTED_BACKENDS = ("reference", "cpu", "cuda", "triton")
__all__ = ["MAX_DRAWS", "SUPPORTED_BACKENDS", "NoiseDraw", "solver_step"]
_MASK32 = 0xFFFFFFFF


@dataclass(frozen=True)
class NoiseDraw:
    """Request for the standard normals of (step, stage) from a noise source; (sigma, sigma_next)
    is the interval a user noise_sampler is called with (grid entries as tensors, other ends as
    host floats, made tensors only when a noise_sampler needs them), `interval` the same ends as host floats
    where the caller has them (a Brownian tree reads them; None: read from sigma and sigma_next)."""

    source: object  # fastdiff.noise.NoiseSource
    step: int
    stage: int
    sigma: torch.Tensor | float
    sigma_next: torch.Tensor | float
    interval: tuple[float, float] | None = None

    def host_interval(self) -> tuple[float, float]:
        """(sigma, sigma_next) as host floats (a device tensor end is read to the host: a sync)."""
        return self.interval if self.interval is not None else (float(self.sigma), float(self.sigma_next))

    def materialize(self, like: torch.Tensor) -> torch.Tensor:
        return self.source.draw(like, self.step, self.stage, self.sigma, self.sigma_next)


def _learnable(a: object, bs: Sequence[object]) -> list[str]:
    """Names of the coefficients given as 0-d floating tensors that require grad (`fastdiff.ld3` learning a grid)."""
    named = [("a", a), *((f"bs[{i}]", b) for i, b in enumerate(bs))]
    return [n for n, v in named if isinstance(v, torch.Tensor) and v.ndim == 0 and v.dtype.is_floating_point and v.requires_grad]


def _differentiable_step(x, ks, a, bs, noise, backend: str, learnable: list[str]) -> torch.Tensor:
    """`a x + sum_i b_i k_i` in plain PyTorch, so that gradients reach tensor coefficients; reference backend only."""
    chosen = resolve_backend(backend, x.device, SUPPORTED_BACKENDS)
    if chosen != "reference" or noise:
        why = f"backend {chosen!r}" if chosen != "reference" else "noise terms"
        raise TypeError(
            f"solver_step: {learnable[0]} is a tensor that requires grad; differentiable coefficients need "
            f"backend='reference' and no noise, got {why}"
        )
    placeholder = [1.0 if name in learnable else v for name, v in [("a", a), *((f"bs[{i}]", b) for i, b in enumerate(bs))]]
    _check_operands(x, ks, placeholder[0], placeholder[1:])
    out = a * x
    for b, k in zip(bs, ks, strict=True):
        out = out + b * k
    return out


def _check_operands(x: torch.Tensor, ks: Sequence[torch.Tensor], a: float, bs: Sequence[float]) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype not in FLOAT_DTYPES:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"solver_step: x must be a float16, bfloat16, float32 or float64 tensor, got {got}")
    if len(ks) != len(bs):
        raise ValueError(f"solver_step needs one coefficient per stage tensor: got {len(ks)} tensors and {len(bs)} coefficients")
    host_float(a, "a", "solver_step")
    for i, (k, b) in enumerate(zip(ks, bs, strict=True)):
        host_float(b, f"bs[{i}]", "solver_step")
        if k.shape != x.shape:
            raise ValueError(f"stage tensor ks[{i}] has shape {tuple(k.shape)}, expected x's shape {tuple(x.shape)}")
        if k.device != x.device:
            raise ValueError(f"stage tensor ks[{i}] is on {k.device}, expected x's device {x.device}")
        if k.dtype != x.dtype:
            raise TypeError(f"stage tensor ks[{i}] has dtype {k.dtype}, expected x's dtype {x.dtype}")


def _check_keys(keys: torch.Tensor, x: torch.Tensor) -> None:
    if x.ndim < 1 or keys.shape != (x.shape[0],):
        raise ValueError(f"noise for x of shape {tuple(x.shape)} needs one seed per sample, got {tuple(keys.shape)} keys")
    if keys.device != x.device:
        raise ValueError(f"noise keys are on {keys.device}, expected x's device {x.device}")


def solver_step(
    x: torch.Tensor,
    ks: Sequence[torch.Tensor],
    a: float,
    bs: Sequence[float],
    noise: Sequence[tuple[float, NoiseDraw]] = (),
    backend: str = "auto",
) -> torch.Tensor:
    """`a x + sum_i b_i ks[i] + sum_j c_j z_j`, with `z_j` the Gaussians requested by `noise` as (c_j, draw)."""
    learnable = _learnable(a, bs)
    if learnable:
        return _differentiable_step(x, ks, a, bs, noise, backend, learnable)
    _check_operands(x, ks, a, bs)
    cs = [host_float(c, f"noise[{j}] coefficient", "solver_step") for j, (c, _) in enumerate(noise)]
    chosen = resolve_backend(backend, x.device, SUPPORTED_BACKENDS)
    ks, bs = list(ks), [float(b) for b in bs]
    keys, draws = None, {}
    for c, draw in _expanded([(c, draw) for c, (_, draw) in zip(cs, noise, strict=True) if c != 0.0]):
        source = draw.source
        if isinstance(source, CounterNoise) and (keys is None or source.keys is keys):
            keys = source.keys
            _check_keys(keys, x)
            word = (draw.step & _MASK32, draw.stage & _MASK32, source.stream & _MASK32)
            draws[word] = draws.get(word, 0.0) + c
        else:
            ks.append(draw.materialize(x))
            bs.append(c)
    passes = _draw_passes(list(draws.items()))
    out = _fused_pass(x, ks, float(a), bs, keys, passes[0], chosen)
    for later in passes[1:]:
        out = _fused_pass(out, [], 1.0, [], keys, later, chosen)
    return out


def _expanded(noise: list[tuple[float, NoiseDraw]]) -> list[tuple[float, NoiseDraw]]:
    """Each noise term, or the weighted draws its source expands it into (`NoiseSource.terms`), weights multiplied."""
    out = []
    for c, draw in noise:
        terms = draw.source.terms(draw)
        out.extend([(c, draw)] if terms is None else [(c * w, d) for w, d in terms])
    return out


def _draw_passes(draws: list[tuple[tuple[int, int, int], float]]) -> list[list[tuple[tuple[int, int, int], float]]]:
    """Counter draws in launches of at most MAX_DRAWS (one launch when there are none)."""
    return [draws[i : i + MAX_DRAWS] for i in range(0, len(draws), MAX_DRAWS)] or [[]]


def _fused_pass(x, ks, a: float, bs, keys, draws, chosen: str) -> torch.Tensor:
    """One fused launch: `a x + sum_i b_i k_i + sum_d c_d z_d` with draws [((step, stage, stream), c_d)]."""
    words, draw_cs = [w for word, _ in draws for w in word], [c for _, c in draws]
    if chosen == "reference":
        return reference.solver_step(x, ks, a, bs, keys, [word for word, _ in draws], draw_cs)
    op = torch.ops.fastdiff.solver_step_triton if chosen == "triton" else torch.ops.fastdiff.solver_step
    return op(x, ks, a, bs, keys if draws else None, words, draw_cs)


@torch.library.custom_op("fastdiff::solver_step_triton", mutates_args=())
def _solver_step_triton(
    x: torch.Tensor,
    ks: list[torch.Tensor],
    a: float,
    bs: list[float],
    keys: torch.Tensor | None,
    draws: list[int],
    cs: list[float],
) -> torch.Tensor:
    from fastdiff.kernels import solver_step as kernels

    return kernels.solver_step(x, ks, a, bs, keys, [tuple(draws[3 * d : 3 * d + 3]) for d in range(len(cs))], cs)


@_solver_step_triton.register_fake
def _solver_step_triton_fake(x, ks, a, bs, keys, draws, cs):
    return x.new_empty(x.shape)


def _setup_context(ctx, inputs, output):
    _, _, ctx.a, ctx.bs, _, ctx.draws, ctx.cs = inputs


def _backward(ctx, grad):
    # No gradient for the coefficients, keys or draws: None, or [] where a list argument was empty
    # (an empty list is read as an empty list of tensors).
    def nothing(values):
        return None if values else []

    return grad * ctx.a, [grad * b for b in ctx.bs], None, nothing(ctx.bs), None, nothing(ctx.draws), nothing(ctx.cs)


torch.library.register_autograd("fastdiff::solver_step_triton", _backward, setup_context=_setup_context)

if _extension.loaded():

    @torch.library.register_fake("fastdiff::solver_step")
    def _solver_step_fake(x, ks, a, bs, keys, draws, cs):
        return x.new_empty(x.shape) if cs else torch.empty_like(x)

    torch.library.register_autograd("fastdiff::solver_step", _backward, setup_context=_setup_context)
