"""The fused trace step: a solver update and a per-sample Hutchinson trace estimate in one launch.

    x_out     = a x + sum_i b_i k_i
    total_out = total + c + w * (1/P) sum_p <u_p, v_p>        (float64 [B])

with u_p = v_p^T (dD/dx) the network's vector-Jacobian product for probe p, computed by the caller
with the probes from `probes(...)`, and v_p regenerated in registers from the counter stream
(`fastdiff.reference.trace_step` defines the probes), so the step reads x, the k_i and the u_p
once, writes x_out once and never reads the probes back. `fastdiff.density.ode_log_likelihood`
calls it once per network evaluation with the coefficients of its Euler or Heun stage.

Backends: "reference" (PyTorch), "cpu" and "cuda" (the compiled `torch.ops.fastdiff.trace_step`),
"triton" (`torch.ops.fastdiff.trace_step_triton`, kernels/trace_step.py). float16/bfloat16 are
computed in float32, float64 in float64; the per-sample dots are summed in float32 by the CUDA and
Triton kernels and in float64 by the CPU kernel (float64 everywhere for float64 tensors), then added
to the float64 accumulator. Each sample's dot is reduced in an order fixed by
its size alone, so results are bitwise reproducible and independent of the batch around a sample.
x_out is row-major. Not differentiable (likelihood evaluation needs no gradient through it).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastdiff import _extension
from fastdiff.backends import resolve_backend
from fastdiff.noise import PROBE_STRIDE, STREAM_PROBE
from fastdiff.ops.arguments import host_float, host_int
from fastdiff.ops.philox import philox_normal
from fastdiff.reference import trace_step as reference
from fastdiff.reference.trace_step import PROBES
from fastdiff.validation import FLOAT_DTYPES

SUPPORTED_BACKENDS = ("reference", "cpu", "cuda", "triton")
_MASK32 = 0xFFFFFFFF


def check_probe_args(n_probes: object, stage: object, kind: object) -> None:
    """n_probes in [1, 2^16], stage in [0, 2^16) (they share one counter word), kind a known probe."""
    n = host_int(n_probes, "n_probes", "trace_step")
    if not 1 <= n <= PROBE_STRIDE:
        raise ValueError(f"n_probes must be in [1, {PROBE_STRIDE}], got {n}")
    s = host_int(stage, "stage", "trace_step")
    if not 0 <= s < PROBE_STRIDE:
        raise ValueError(f"stage must be in [0, {PROBE_STRIDE}), got {s}")
    if kind not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {kind!r}")


def _check_keys(keys: object, x: torch.Tensor) -> None:
    if not isinstance(keys, torch.Tensor) or keys.dtype != torch.int64 or keys.shape != (x.shape[0],):
        got = f"dtype {keys.dtype}, shape {tuple(keys.shape)}" if isinstance(keys, torch.Tensor) else type(keys).__name__
        raise ValueError(f"trace_step: keys must be an int64 tensor of shape [B] = [{x.shape[0]}] (seeds per sample), got {got}")
    if keys.device != x.device:
        raise ValueError(f"trace_step: keys are on {keys.device}, expected x's device {x.device}")


def _check_operands(x, ks, bs, u, total) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype not in FLOAT_DTYPES or x.ndim < 1:
        got = f"dtype {x.dtype}, shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"trace_step: x must be a float16, bfloat16, float32 or float64 tensor of shape [B, ...], got {got}")
    if len(ks) != len(bs):
        raise ValueError(f"trace_step needs one coefficient per stage tensor: got {len(ks)} tensors and {len(bs)} coefficients")
    named = [(f"ks[{i}]", k, tuple(x.shape)) for i, k in enumerate(ks)]
    if not isinstance(u, torch.Tensor) or u.ndim != x.ndim + 1 or u.shape[0] < 1:
        got = tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__
        want = ", ".join(map(str, x.shape))
        raise ValueError(f"trace_step: u must have shape [P, *x.shape] = [P, {want}] with P >= 1, got {got}")
    named.append(("u", u, (u.shape[0], *x.shape)))
    for name, t, shape in named:
        if tuple(t.shape) != shape:
            raise ValueError(f"trace_step: {name} has shape {tuple(t.shape)}, expected {shape}")
        if t.device != x.device:
            raise ValueError(f"trace_step: {name} is on {t.device}, expected x's device {x.device}")
        if t.dtype != x.dtype:
            raise TypeError(f"trace_step: {name} has dtype {t.dtype}, expected x's dtype {x.dtype}")
    if not isinstance(total, torch.Tensor) or total.dtype != torch.float64 or total.shape != (x.shape[0],):
        got = f"dtype {total.dtype}, shape {tuple(total.shape)}" if isinstance(total, torch.Tensor) else type(total).__name__
        raise ValueError(f"trace_step: total must be a float64 tensor of shape [B] = [{x.shape[0]}], got {got}")
    if total.device != x.device:
        raise ValueError(f"trace_step: total is on {total.device}, expected x's device {x.device}")


def probes(
    keys: torch.Tensor,
    shape: Sequence[int],
    n_probes: int,
    step: int,
    stage: int,
    kind: str,
    dtype: torch.dtype,
    backend: str = "auto",
) -> torch.Tensor:
    """The probes `[P, *shape]` (shape = [B, ...]) that `trace_step` regenerates, for the caller's
    vector-Jacobian products. Gaussian probes come from the backend's `philox_normal` kernel (the
    function the fused step uses), Rademacher probes from the PyTorch reference (exact +-1)."""
    check_probe_args(n_probes, stage, kind)
    batch, numel = shape[0], int(torch.Size(shape[1:]).numel())
    if kind == "rademacher":
        v = reference.probes(keys, numel, n_probes, step, stage, kind, dtype)
    else:
        words = [(stage + PROBE_STRIDE * p) & _MASK32 for p in range(n_probes)]
        v = torch.stack([philox_normal(keys, numel, step & _MASK32, w, STREAM_PROBE, dtype, backend) for w in words])
    return v.view(n_probes, batch, *shape[1:])


def trace_step(
    x: torch.Tensor,
    ks: Sequence[torch.Tensor],
    a: float,
    bs: Sequence[float],
    u: torch.Tensor,
    keys: torch.Tensor,
    step: int,
    stage: int,
    probe: str,
    total: torch.Tensor,
    c: float,
    w: float,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(a x + sum_i bs[i] ks[i], total + c + w mean_p <u[p], v_p>), see the module docstring; u is
    `[P, *x.shape]` (P >= 1 probes), keys int64 `[B]`, total float64 `[B]`."""
    _check_operands(x, ks, bs, u, total)
    _check_keys(keys, x)
    check_probe_args(u.shape[0], stage, probe)
    step = host_int(step, "step", "trace_step") & _MASK32
    a, c, w = (host_float(v, name, "trace_step") for v, name in ((a, "a"), (c, "c"), (w, "w")))
    bs = [host_float(b, f"bs[{i}]", "trace_step") for i, b in enumerate(bs)]
    chosen = resolve_backend(backend, x.device, SUPPORTED_BACKENDS)
    if chosen == "reference":
        return reference.trace_step(x, ks, a, bs, u, keys, step, stage, probe, total, c, w)
    op = torch.ops.fastdiff.trace_step_triton if chosen == "triton" else torch.ops.fastdiff.trace_step
    return op(x, list(ks), a, bs, u, keys, step, stage, PROBES.index(probe), total, c, w)


@torch.library.custom_op("fastdiff::trace_step_triton", mutates_args=())
def _trace_step_triton(
    x: torch.Tensor,
    ks: list[torch.Tensor],
    a: float,
    bs: list[float],
    u: torch.Tensor,
    keys: torch.Tensor,
    step: int,
    stage: int,
    probe: int,
    total: torch.Tensor,
    c: float,
    w: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    from fastdiff.kernels import trace_step as kernels

    return kernels.trace_step(x, ks, a, bs, u, keys, step, stage, probe, total, c, w)


def _fake(x, ks, a, bs, u, keys, step, stage, probe, total, c, w):
    return x.new_empty(x.shape), total.new_empty(total.shape)


_trace_step_triton.register_fake(_fake)

if _extension.loaded():
    torch.library.register_fake("fastdiff::trace_step")(_fake)
