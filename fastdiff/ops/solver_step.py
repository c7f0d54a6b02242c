"""The generic solver step `x' = a x + sum_i b_i k_i + sum_j c_j z_j`, dispatched by backend.

Every solver in `fastdiff.solvers` expresses its update through this one primitive, with the
scalars computed on the host in float64. Noise enters as `NoiseDraw` requests rather than
tensors so that a fused backend can generate the Gaussians in registers.

Backends: "reference" (PyTorch), "cpu" and "cuda" (the compiled `torch.ops.fastdiff.solver_step`:
one pass over memory, float16/bfloat16 added in float32). "auto" takes the compiled kernel of x's
device when it is built (float64 included). Coefficients are host numbers, never tensors, so a
step never syncs with the device. The compiled op is differentiable: the step is linear, so its
gradients are `a g`, `b_i g` and `c_j g`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fastdiff import _extension
from fastdiff.backends import resolve_backend
from fastdiff.reference import solver_step as reference
from fastdiff.validation import FLOAT_DTYPES

SUPPORTED_BACKENDS = ("reference", "cpu", "cuda")


@dataclass(frozen=True)
class NoiseDraw:
    """Request for the standard normals of (step, stage) from a noise source."""

    source: object  # fastdiff.noise.NoiseSource
    step: int
    stage: int
    sigma: torch.Tensor
    sigma_next: torch.Tensor

    def materialize(self, like: torch.Tensor) -> torch.Tensor:
        return self.source.draw(like, self.step, self.stage, self.sigma, self.sigma_next)


def _check_coefficient(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"solver_step: {name} must be a host number (float), got {type(value).__name__}")
    return float(value)


def _check_operands(x: torch.Tensor, ks: Sequence[torch.Tensor], a: float, bs: Sequence[float]) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype not in FLOAT_DTYPES:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"solver_step: x must be a float16, bfloat16, float32 or float64 tensor, got {got}")
    if len(ks) != len(bs):
        raise ValueError(f"solver_step needs one coefficient per stage tensor: got {len(ks)} tensors and {len(bs)} coefficients")
    _check_coefficient("a", a)
    for i, (k, b) in enumerate(zip(ks, bs, strict=True)):
        _check_coefficient(f"bs[{i}]", b)
        if k.shape != x.shape:
            raise ValueError(f"stage tensor ks[{i}] has shape {tuple(k.shape)}, expected x's shape {tuple(x.shape)}")
        if k.device != x.device:
            raise ValueError(f"stage tensor ks[{i}] is on {k.device}, expected x's device {x.device}")
        if k.dtype != x.dtype:
            raise TypeError(f"stage tensor ks[{i}] has dtype {k.dtype}, expected x's dtype {x.dtype}")


def solver_step(
    x: torch.Tensor,
    ks: Sequence[torch.Tensor],
    a: float,
    bs: Sequence[float],
    noise: Sequence[tuple[float, NoiseDraw]] = (),
    backend: str = "auto",
) -> torch.Tensor:
    """`a x + sum_i b_i ks[i] + sum_j c_j z_j`, with `z_j` the Gaussians requested by `noise`."""
    _check_operands(x, ks, a, bs)
    cs = [_check_coefficient(f"noise[{j}] coefficient", c) for j, (c, _) in enumerate(noise)]
    chosen = resolve_backend(backend, x.device, SUPPORTED_BACKENDS)
    zs = [(c, draw.materialize(x)) for c, (_, draw) in zip(cs, noise, strict=True) if c != 0.0]
    if chosen == "reference":
        return reference.solver_step(x, ks, a, bs, zs)
    return torch.ops.fastdiff.solver_step(
        x, list(ks), float(a), [float(b) for b in bs], [z for _, z in zs], [c for c, _ in zs]
    )


if _extension.loaded():

    @torch.library.register_fake("fastdiff::solver_step")
    def _solver_step_fake(x, ks, a, bs, zs, cs):
        return torch.empty_like(x)

    def _setup_context(ctx, inputs, output):
        _, _, ctx.a, ctx.bs, _, ctx.cs = inputs

    def _backward(ctx, grad):
        # No gradient for the coefficients: None, or [] where the float list was empty (an empty
        # list is read as an empty list of tensors).
        no_bs, no_cs = (None if ctx.bs else []), (None if ctx.cs else [])
        return grad * ctx.a, [grad * b for b in ctx.bs], None, no_bs, [grad * c for c in ctx.cs], no_cs

    torch.library.register_autograd("fastdiff::solver_step", _backward, setup_context=_setup_context)
