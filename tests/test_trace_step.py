"""The fused trace step `(a x + sum_i b_i k_i, total + c + w mean_p <u_p, v_p>)`: every backend against
a float64 evaluation on the same (rounded) inputs and the float64 probes, on odd sizes, strided views
and every dtype; the probes the kernels regenerate equal the ones handed to the network; determinism,
batch invariance, the probe laws; argument checks.
"""

from __future__ import annotations

import zlib

import pytest
import torch
from backend_params import backend_params
from poison import poisoned_outputs

from fastdiff.backends import triton_interpreted
from fastdiff.ops.trace_step import probes, trace_step
from fastdiff.reference import trace_step as reference

parametrize_backends = pytest.mark.parametrize(("backend", "device"), backend_params())
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["float64", "float32", "float16", "bfloat16"]
KINDS = ["rademacher", "gaussian"]
# Sizes around the CPU kernel's 1024-element chunks, groups of four and Triton's 1024-element tiles.
SHAPES = [(1, 1), (3, 5), (2, 1023), (2, 3, 7, 11), (1, 4097)]
# x_out: relative to max |a x| + sum |b k|; four roundings of partial sums of at most that size, at most
# 2 eps (the reference rounds each one to the dtype, the fused kernels only the result); total: relative
# to mean_p sum |u_p| |v_p| (the dot's scale).
X_TOL = {torch.float64: 1e-14, torch.float32: 1e-6, torch.float16: 4e-3, torch.bfloat16: 3e-2}
DOT_TOL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.float16: 2e-5, torch.bfloat16: 2e-5}
SEEDS = [5, 2**63 + 17, 123456789]


def skip_if_interpreted(backend: str, what: str) -> None:
    """Triton's interpreter costs about 0.1 s per program: on CPU it runs a subset (a GPU runs all)."""
    if backend == "triton" and triton_interpreted():
        pytest.skip(f"triton interpreter: {what} covered on GPU only")


def fresh(shape, dtype, device, generator) -> torch.Tensor:
    return torch.randn(shape, dtype=torch.float64, generator=generator).to(device=device, dtype=dtype)


def keys_for(batch: int, device) -> torch.Tensor:
    return torch.tensor([(SEEDS[b % 3] + 1000 * b) % 2**63 for b in range(batch)], dtype=torch.int64, device=device)


def expected(x, ks, a, bs, u, keys, step, stage, kind, total, c, w):
    """Float64 arithmetic on the given operands with float64 probes, and the scales for the tolerances."""
    x64, u64 = x.cpu().double(), u.cpu().double()
    ks64 = [k.cpu().double() for k in ks]
    x_ref, total_ref = reference.trace_step(x64, ks64, a, bs, u64, keys.cpu(), step, stage, kind, total.cpu(), c, w)
    x_scale = (abs(a) * x64.abs() + sum(abs(b) * k.abs() for b, k in zip(bs, ks64, strict=True))).max()
    v = reference.probes(keys.cpu(), x[0].numel(), u.shape[0], step, stage, kind, torch.float64)
    dot_scale = abs(w) * (u64.reshape(v.shape).abs() * v.abs()).sum(-1).mean(0)
    return x_ref, total_ref, float(x_scale), dot_scale


def check(out, x, ks, a, bs, u, keys, step, stage, kind, total, c, w):
    x_out, total_out = out
    assert x_out.shape == x.shape and x_out.dtype == x.dtype and x_out.device == x.device
    assert total_out.shape == total.shape and total_out.dtype == torch.float64
    assert torch.isfinite(x_out).all() and torch.isfinite(total_out).all()
    x_ref, total_ref, x_scale, dot_scale = expected(x, ks, a, bs, u, keys, step, stage, kind, total, c, w)
    err = (x_out.cpu().double() - x_ref).abs().max().item()
    assert err <= X_TOL[x.dtype] * x_scale + 1e-30, f"x_out off by {err:g} (scale {x_scale:g})"
    dot_err = (total_out.cpu() - total_ref).abs()
    bound = DOT_TOL[x.dtype] * dot_scale + 1e-12 * (abs(c) + total.cpu().abs())
    assert bool((dot_err <= bound).all()), f"total off by {dot_err.max().item():g} (bound {bound.min().item():g})"


def operands(shape, dtype, device, n_probes, seed, num_k=3):
    g = torch.Generator().manual_seed(seed)
    x = fresh(shape, dtype, device, g)
    ks = [fresh(shape, dtype, device, g) for _ in range(num_k)]
    u = fresh((n_probes, *shape), dtype, device, g)
    total = torch.randn(shape[0], dtype=torch.float64, generator=g).to(device)
    a, *bs = (torch.rand(num_k + 1, dtype=torch.float64, generator=g) * 3 - 1.5).tolist()
    return x, ks, a, bs, u, total


@parametrize_backends
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("kind", KINDS)
def test_matches_float64_on_odd_sizes(backend, device, dtype, shape, kind):
    if dtype != torch.float32 and shape != (2, 3, 7, 11):
        skip_if_interpreted(backend, "every size in every dtype")
    n_probes = 2
    x, ks, a, bs, u, total = operands(shape, dtype, device, n_probes, zlib.crc32(f"{shape}{kind}{dtype}".encode()))
    keys = keys_for(shape[0], device)
    with poisoned_outputs():
        out = trace_step(x, ks, a, bs, u, keys, 7, 1, kind, total, 0.25, -1.5, backend=backend)
    check(out, x, ks, a, bs, u, keys, 7, 1, kind, total, 0.25, -1.5)


@parametrize_backends
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=["float64", "float32", "bfloat16"])
def test_non_contiguous_operands(backend, device, dtype):
    if dtype != torch.float32:
        skip_if_interpreted(backend, "strided operands in every dtype")
    g = torch.Generator().manual_seed(3)
    base = fresh((40, 30), dtype, device, g)
    x = base[:30, :4].t()  # [4, 30] transposed
    ks = [base[::2, ::2][:4, :15].repeat(1, 2), base[0, :30].expand(4, 30)]
    u = fresh((30, 4, 2), dtype, device, g).permute(2, 1, 0)  # [2, 4, 30], non-contiguous
    total = torch.randn(8, dtype=torch.float64, generator=g).to(device)[::2]
    keys = keys_for(8, device)[::2]
    for kind in KINDS:
        out = trace_step(x, ks, 0.5, [1.25, -0.75], u, keys, 2, 0, kind, total, 0.0, 2.0, backend=backend)
        check(out, x, ks, 0.5, [1.25, -0.75], u, keys, 2, 0, kind, total, 0.0, 2.0)


@parametrize_backends
@pytest.mark.parametrize("kind", KINDS)
def test_regenerated_probes_equal_the_materialized_ones(backend, device, kind):
    """u = v (the probes given to the network): <v, v> is exactly numel for Rademacher, ||v||^2 for Gaussian."""
    dtype = torch.float32
    shape = (2, 2, 37)
    keys = keys_for(2, device)
    v = probes(keys, shape, 3, 11, 1, kind, dtype, backend=backend)
    assert v.shape == (3, *shape) and v.dtype == dtype
    x = torch.zeros(shape, dtype=dtype, device=device)
    total = torch.zeros(2, dtype=torch.float64, device=device)
    _, total_out = trace_step(x, [], 1.0, [], v, keys, 11, 1, kind, total, 0.0, 1.0, backend=backend)
    squared = (v.double() ** 2).flatten(2).sum(-1).mean(0)
    if kind == "rademacher":
        assert torch.equal(v.abs(), torch.ones_like(v))
        assert torch.equal(total_out.cpu(), torch.full((2,), 74.0, dtype=torch.float64))
    else:
        torch.testing.assert_close(total_out, squared, rtol=1e-6, atol=0)


@parametrize_backends
@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_and_batch_invariant(backend, device, kind):
    """Bitwise the same on rerun; sample b's outputs do not change when the batch around it does."""
    shape = (2, 3, 130)
    x, ks, a, bs, u, total = operands(shape, torch.float32, device, 2, 17, num_k=2)
    keys = keys_for(2, device)
    args = (7, 1, kind)
    first = trace_step(x, ks, a, bs, u, keys, *args, total, 0.5, 1.0, backend=backend)
    again = trace_step(x, ks, a, bs, u, keys, *args, total, 0.5, 1.0, backend=backend)
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    rows = slice(1, 2)
    part = trace_step(x[rows], [k[rows] for k in ks], a, bs, u[:, rows], keys[rows], *args, total[rows], 0.5, 1.0,
                      backend=backend)
    assert torch.equal(part[0], first[0][rows]) and torch.equal(part[1], first[1][rows])


def test_probes_depend_on_every_counter_field_and_follow_their_laws():
    keys = keys_for(3, "cpu")
    base = probes(keys, (3, 4000), 2, 5, 0, "gaussian", torch.float64)
    assert not torch.equal(base[0], base[1])  # probe index
    assert not torch.equal(base, probes(keys, (3, 4000), 2, 6, 0, "gaussian", torch.float64))  # step
    assert not torch.equal(base, probes(keys, (3, 4000), 2, 5, 1, "gaussian", torch.float64))  # stage
    # a sample's probes depend on its seed only
    assert torch.equal(base[:, 1:2], probes(keys[1:2], (1, 4000), 2, 5, 0, "gaussian", torch.float64))
    n = base.numel()
    assert abs(base.mean().item()) < 4 / n**0.5 and abs(base.var().item() - 1) < 4 * (2 / n) ** 0.5
    signs = probes(keys, (3, 4000), 2, 5, 0, "rademacher", torch.float32)
    assert set(signs.unique().tolist()) == {-1.0, 1.0} and abs(signs.mean().item()) < 4 / n**0.5
    # neighbouring elements are uncorrelated (they come from different words of one Philox block)
    pairs = signs.reshape(-1, 2)
    assert abs((pairs[:, 0] * pairs[:, 1]).mean().item()) < 4 / (n / 2) ** 0.5


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_bad_arguments(backend):
    if backend == "cpu":
        pytest.importorskip("fastdiff._C")
    x = torch.randn(2, 3)
    u = torch.randn(1, 2, 3)
    keys = keys_for(2, "cpu")
    total = torch.zeros(2, dtype=torch.float64)

    def call(**over):
        args = {"x": x, "ks": [x], "a": 1.0, "bs": [0.5], "u": u, "keys": keys, "step": 0, "stage": 0,
                "probe": "rademacher", "total": total, "c": 0.0, "w": 1.0}
        args.update(over)
        return trace_step(**args, backend=backend)

    with pytest.raises(ValueError, match=r"u must have shape \[P, \*x.shape\]"):
        call(u=torch.randn(2, 3))
    with pytest.raises(ValueError, match="P >= 1"):
        call(u=torch.randn(0, 2, 3))
    with pytest.raises(ValueError, match="u has shape"):
        call(u=torch.randn(1, 2, 4))
    with pytest.raises(TypeError, match="u has dtype"):
        call(u=u.double())
    with pytest.raises(ValueError, match="ks\\[0\\] has shape"):
        call(ks=[torch.randn(2, 4)])
    with pytest.raises(ValueError, match="one coefficient per stage tensor"):
        call(bs=[0.5, 1.0])
    with pytest.raises(ValueError, match="probe must be one of"):
        call(probe="sphere")
    with pytest.raises(ValueError, match="keys must be an int64 tensor of shape"):
        call(keys=keys[:1])
    with pytest.raises(ValueError, match="keys must be an int64"):
        call(keys=keys.float())
    with pytest.raises(ValueError, match="total must be a float64 tensor"):
        call(total=total.float())
    with pytest.raises(ValueError, match="stage must be in"):
        call(stage=1 << 16)
    with pytest.raises(TypeError, match="a must be a host number"):
        call(a=torch.tensor(1.0))
    with pytest.raises(ValueError, match="n_probes must be in"):
        probes(keys, (2, 3), 0, 0, 0, "gaussian", torch.float32)


def test_unavailable_backend_raises():
    x = torch.randn(2, 3)
    args = (x, [], 1.0, [], torch.randn(1, 2, 3), keys_for(2, "cpu"), 0, 0, "gaussian", torch.zeros(2, dtype=torch.float64),
            0.0, 1.0)
    with pytest.raises((RuntimeError, ValueError), match="backend='cuda'"):
        trace_step(*args, backend="cuda")
    with pytest.raises(ValueError, match="backend must be one of"):
        trace_step(*args, backend="fortran")


def test_compiled_op_passes_opcheck():
    pytest.importorskip("fastdiff._C")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 9, generator=g)
    args = (x, [torch.randn(3, 9, generator=g)], 0.5, [1.5], torch.randn(2, 3, 9, generator=g), keys_for(3, "cpu"), 4, 1, 1,
            torch.randn(3, dtype=torch.float64, generator=g), 0.25, -1.0)
    torch.library.opcheck(torch.ops.fastdiff.trace_step.default, args)
