"""The generic solver step `a x + sum_i b_i k_i + sum_j c_j z_j`: every backend against a float64
evaluation of the same (rounded) inputs, on odd sizes, strided views and every dtype; noise
requests; argument checks; gradients and torch.compile for the compiled op.

Low precision follows flash-attention's rule: a backend's error against float64 is at most twice
the error of plain PyTorch arithmetic at the same precision.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from backend_params import backend_params
from poison import poisoned_outputs, stable_seed

import fastdiff
from fastdiff.backends import triton_interpreted
from fastdiff.ops.philox import CounterNoise
from fastdiff.ops.solver_step import MAX_DRAWS, NoiseDraw, solver_step
from fastdiff.reference import philox as philox_reference
from fastdiff.reference import solver_step as reference

parametrize_backends = pytest.mark.parametrize(("backend", "device"), backend_params())
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
DTYPE_IDS = ["float64", "float32", "float16", "bfloat16"]
# Sizes around the CPU kernel's 1024-element chunks and its 2^15-element parallel threshold.
SHAPES = [(1,), (3, 5), (2, 1023), (4, 3, 7, 11), (1, 4097), (3, 40_001)]


def fresh(shape, dtype, device, generator) -> torch.Tensor:
    """Random operand, never zero-filled: N(0, 1) drawn in float64, then rounded to `dtype`."""
    return torch.randn(shape, dtype=torch.float64, generator=generator).to(device=device, dtype=dtype)


def exact(x, ks, a, bs, zs=(), cs=()) -> torch.Tensor:
    """The step in float64 on the given (already rounded) operands."""
    out = a * x.double()
    for coef, t in [*zip(bs, ks, strict=True), *zip(cs, zs, strict=True)]:
        out = out + coef * t.double()
    return out


def max_err(out: torch.Tensor, ref64: torch.Tensor) -> float:
    return (out.double() - ref64).abs().max().item()


def check_against_float64(out, x, ks, a, bs, zs=(), cs=()):
    """float64: agreement to rounding; other dtypes: error at most 2x plain PyTorch's at that precision."""
    ref64 = exact(x, ks, a, bs, zs, cs)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    if x.dtype == torch.float64:
        torch.testing.assert_close(out, ref64, rtol=1e-14, atol=1e-14)
        return
    plain = reference.solver_step(x, ks, a, bs, list(zip(cs, zs, strict=True)))
    assert max_err(out, ref64) <= 2 * max_err(plain, ref64) + torch.finfo(x.dtype).tiny


def coefficients(n: int, generator: torch.Generator) -> list[float]:
    return (torch.rand(n, dtype=torch.float64, generator=generator) * 3 - 1.5).tolist()


@parametrize_backends
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_float64_on_odd_sizes(backend, device, dtype, shape):
    g = torch.Generator().manual_seed(stable_seed(shape, dtype))
    x = fresh(shape, dtype, device, g)
    ks = [fresh(shape, dtype, device, g) for _ in range(3)]
    a, *bs = coefficients(4, g)
    with poisoned_outputs():
        out = solver_step(x, ks, a, bs, backend=backend)
    assert torch.isfinite(out).all()
    check_against_float64(out, x, ks, a, bs)


@parametrize_backends
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("num_stages", [0, 1, 2, 3, 4])
def test_any_number_of_stage_tensors(backend, device, dtype, num_stages):
    g = torch.Generator().manual_seed(100 + num_stages)
    shape = (3, 2, 333)
    x = fresh(shape, dtype, device, g)
    ks = [fresh(shape, dtype, device, g) for _ in range(num_stages)]
    a, *bs = coefficients(1 + num_stages, g)
    out = solver_step(x, ks, a, bs, backend=backend)
    check_against_float64(out, x, ks, a, bs)


def _views(base: torch.Tensor) -> dict[str, torch.Tensor]:
    """Operands of shape [6, 50] with various memory layouts, cut from the [60, 120] `base`."""
    return {
        "contiguous": base[:6, :50].contiguous(),
        "transposed": base[:50, :6].t(),
        "strided": base[::2, ::2][:6, :50],
        "offset": base[3:9, 7:57],
        "expanded": base[0, :50].expand(6, 50),
    }


@parametrize_backends
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("x_layout", ["contiguous", "transposed", "strided", "offset"])
def test_non_contiguous_operands(backend, device, dtype, x_layout):
    g = torch.Generator().manual_seed(7)
    views = [_views(fresh((60, 120), dtype, device, g)) for _ in range(4)]
    x = views[0][x_layout]
    ks = [views[1]["transposed"], views[2]["strided"], views[3]["expanded"], views[1]["offset"]]
    assert x.shape == (6, 50) and all(k.shape == (6, 50) for k in ks)
    a, *bs = coefficients(5, g)
    out = solver_step(x, ks, a, bs, backend=backend)
    check_against_float64(out, x, ks, a, bs)


@parametrize_backends
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_permuted_layouts_keep_values(backend, device, dtype):
    """Operands that share a permuted (channels-last) layout are handled in place; mixed layouts are copied."""
    g = torch.Generator().manual_seed(8)
    shape = (2, 3, 5, 7)
    x = fresh(shape, dtype, device, g).contiguous(memory_format=torch.channels_last)
    same = fresh(shape, dtype, device, g).contiguous(memory_format=torch.channels_last)
    other = fresh(shape, dtype, device, g)
    out = solver_step(x, [same, other], 0.75, [-1.25, 0.5], backend=backend)
    check_against_float64(out, x, [same, other], 0.75, [-1.25, 0.5])


@parametrize_backends
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_with_counter_noise(backend, device, dtype):
    g = torch.Generator().manual_seed(9)
    shape = (3, 4, 21)
    x = fresh(shape, dtype, device, g)
    ks = [fresh(shape, dtype, device, g) for _ in range(2)]
    source = CounterNoise([11, 2**63 + 3, 5], torch.device(device))
    sigma = torch.tensor(1.0, device=device)
    draws = [NoiseDraw(source, 4, stage, sigma, sigma * 0.5) for stage in range(2)]
    a, b0, b1, c0, c1 = coefficients(5, g)
    out = solver_step(x, ks, a, [b0, b1], noise=[(c0, draws[0]), (c1, draws[1])], backend=backend)
    zs = [d.materialize(x) for d in draws]
    assert not torch.equal(zs[0], zs[1])
    check_against_float64(out, x, ks, a, [b0, b1], zs, [c0, c1])


# ---------------------------------------------------------------------------------------------
# Gaussians generated in the kernel from the counter stream.
# ---------------------------------------------------------------------------------------------
# Tolerance of a fused step with noise against float64 arithmetic on float64 Gaussians: the
# result's rounding plus float32 Box-Muller (within 2e-6 of float64 on the same Philox words).
NOISE_TOL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def draws_for(source: CounterNoise, count: int) -> list[NoiseDraw]:
    sigma = torch.tensor(1.0)
    return [NoiseDraw(source, 7 + d, d % 3, sigma, sigma) for d in range(count)]


def exact_with_noise(x, ks, a, bs, source, draws, cs) -> torch.Tensor:
    """The step in float64, with the float64 reference Gaussians of each draw."""
    per_sample = x[0].numel()
    keys = source.keys.cpu()
    zs = [philox_reference.philox_normal(keys, per_sample, d.step, d.stage, source.stream, torch.float64) for d in draws]
    return exact(x.cpu(), [k.cpu() for k in ks], a, bs, [z.view(x.shape) for z in zs], cs)


@parametrize_backends
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("per_sample", [1, 7, 1023, 4097])
@pytest.mark.parametrize("num_draws", [1, 2, 4])
def test_fused_noise_matches_float64(backend, device, dtype, per_sample, num_draws):
    g = torch.Generator().manual_seed(per_sample * 10 + num_draws)
    shape = (3, per_sample)
    x = fresh(shape, dtype, device, g)
    ks = [fresh(shape, dtype, device, g) for _ in range(2)]
    a, *coefs = coefficients(3 + num_draws, g)
    bs, cs = coefs[:2], coefs[2:]
    source = CounterNoise([5, 2**63 + 17, 123456789], torch.device(device))
    draws = draws_for(source, num_draws)
    with poisoned_outputs():
        out = solver_step(x, ks, a, bs, noise=list(zip(cs, draws, strict=True)), backend=backend)
    assert out.shape == x.shape and out.dtype == dtype and torch.isfinite(out).all()
    expected = exact_with_noise(x, ks, a, bs, source, draws, cs)
    tol = NOISE_TOL[dtype]
    torch.testing.assert_close(out.cpu().double(), expected, rtol=tol, atol=tol * float(expected.abs().max()))


@parametrize_backends
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_fused_noise_on_strided_and_channels_last_inputs(backend, device, dtype):
    """The Gaussians follow the logical (row-major) element order whatever the operands' layout."""
    g = torch.Generator().manual_seed(11)
    x = fresh((2, 3, 5, 7), dtype, device, g).contiguous(memory_format=torch.channels_last)
    k = fresh((2, 7, 5, 3), dtype, device, g).permute(0, 3, 2, 1)
    source = CounterNoise([9, 10], torch.device(device))
    draws = draws_for(source, 2)
    out = solver_step(x, [k], 0.5, [-1.5], noise=[(0.75, draws[0]), (-0.25, draws[1])], backend=backend)
    expected = exact_with_noise(x, [k], 0.5, [-1.5], source, draws, [0.75, -0.25])
    tol = NOISE_TOL[dtype]
    torch.testing.assert_close(out.cpu().double(), expected, rtol=tol, atol=tol * float(expected.abs().max()))


@parametrize_backends
def test_more_draws_than_a_kernel_takes(backend, device):
    """Draws beyond MAX_DRAWS take further fused passes, draws from a second stream of other keys are materialized:
    same result."""
    g = torch.Generator().manual_seed(12)
    x = fresh((2, 33), torch.float64, device, g)
    source = CounterNoise([1, 2], torch.device(device))
    other = CounterNoise([3, 4], torch.device(device))
    draws = draws_for(source, MAX_DRAWS + 6)
    cs = coefficients(MAX_DRAWS + 6, g)
    out = solver_step(x, [], 1.0, [], noise=list(zip(cs, draws, strict=True)), backend=backend)
    torch.testing.assert_close(out.cpu(), exact_with_noise(x, [], 1.0, [], source, draws, cs), rtol=1e-12, atol=1e-12)
    mixed = solver_step(x, [], 1.0, [], noise=[(0.5, draws[0]), (0.5, draws_for(other, 1)[0])], backend=backend)
    expected = exact_with_noise(x, [], 1.0, [], source, draws[:1], [0.5]) + 0.5 * other.draw(x, 7, 0).cpu()
    torch.testing.assert_close(mixed.cpu(), expected, rtol=1e-12, atol=1e-12)


@parametrize_backends
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["float32", "float16"])
def test_fused_noise_is_deterministic_and_batch_invariant(backend, device, dtype):
    g = torch.Generator().manual_seed(13)
    seeds = [2**64 - 1, 0, 77, 2**40 + 3]
    x = fresh((4, 3, 37), dtype, device, g)
    k = fresh((4, 3, 37), dtype, device, g)
    draws = draws_for(CounterNoise(seeds, torch.device(device)), 2)
    noise = [(0.3, draws[0]), (-1.1, draws[1])]
    first = solver_step(x, [k], 0.9, [0.2], noise=noise, backend=backend)
    assert torch.equal(first, solver_step(x, [k], 0.9, [0.2], noise=noise, backend=backend))
    for b, seed in enumerate(seeds):
        alone = draws_for(CounterNoise([seed], torch.device(device)), 2)
        single = solver_step(x[b : b + 1], [k[b : b + 1]], 0.9, [0.2], noise=[(0.3, alone[0]), (-1.1, alone[1])], backend=backend)
        assert torch.equal(single[0], first[b])


@parametrize_backends
def test_noise_keys_must_match_the_batch(backend, device):
    x = torch.randn(3, 4, device=device)
    draw = draws_for(CounterNoise([1, 2], torch.device(device)), 1)[0]
    with pytest.raises(ValueError, match="one seed per sample"):
        solver_step(x, [], 1.0, [], noise=[(1.0, draw)], backend=backend)


@parametrize_backends
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("scale", [1.0, 1 + 2**-11, 1 + 2**-8, 3.0, 2**-14, 2**15], ids=lambda v: f"{v:g}")
def test_low_precision_rounding_is_exact(backend, device, dtype, scale):
    """Every float16/bfloat16 bit pattern (subnormals, inf, NaN included) times `scale`: the float32
    product is exact, so the result must be PyTorch's round-to-nearest-even of it, bit for bit
    (1 + 2^-11 and 1 + 2^-8 put products exactly on ties; 2^-14 makes subnormals, 2^15 overflows)."""
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype).to(device)
    out = solver_step(x, [], scale, [], backend=backend)
    expected = (x.float() * scale).to(dtype)
    if backend == "triton" and triton_interpreted() and dtype == torch.bfloat16:
        # Triton 3.6's interpreter garbles bfloat16 subnormals (on a GPU every pattern is checked)
        def subnormal(t):
            return (t != 0) & (t.float().abs() < torch.finfo(dtype).tiny)

        keep = ~(subnormal(x) | subnormal(expected))
        out, expected = out[keep], expected[keep]
    torch.testing.assert_close(out, expected, rtol=0, atol=0, equal_nan=True)


@parametrize_backends
def test_zero_coefficients_skip_their_terms(backend, device):
    """As in the reference, a term with coefficient 0 is not read: NaN there does not propagate."""
    g = torch.Generator().manual_seed(10)
    x = fresh((4, 9), torch.float32, device, g)
    k = fresh((4, 9), torch.float32, device, g)
    nan = torch.full_like(x, float("nan"))
    source = CounterNoise([1, 2, 3, 4], torch.device(device))
    never = NoiseDraw(source, 0, 0, torch.tensor(1.0), torch.tensor(0.5))
    out = solver_step(x, [nan, k], 0.5, [0.0, 2.0], noise=[(0.0, never)], backend=backend)
    check_against_float64(out, x, [k], 0.5, [2.0])


@parametrize_backends
def test_empty_and_scalar_shapes(backend, device):
    empty = torch.empty(0, 3, device=device)
    assert solver_step(empty, [empty], 1.0, [2.0], backend=backend).shape == (0, 3)
    one = torch.tensor(1.5, dtype=torch.float64, device=device)
    out = solver_step(one, [one * 2], 2.0, [0.25], backend=backend)
    assert out.shape == () and out.item() == 3.75


# ---------------------------------------------------------------------------------------------
# Arguments.
# ---------------------------------------------------------------------------------------------
@parametrize_backends
def test_mismatched_operands_raise_naming_them(backend, device):
    x = torch.randn(2, 3, device=device)
    with pytest.raises(ValueError, match=r"ks\[1\].*shape"):
        solver_step(x, [x, torch.randn(3, 2, device=device)], 1.0, [1.0, 1.0], backend=backend)
    with pytest.raises(ValueError, match=r"ks\[0\].*meta"):
        solver_step(x, [torch.empty(2, 3, device="meta")], 1.0, [1.0], backend=backend)
    with pytest.raises(ValueError, match="coefficient"):
        solver_step(x, [x, x], 1.0, [1.0], backend=backend)
    with pytest.raises(TypeError, match=r"ks\[0\].*float64"):
        solver_step(x, [x.double()], 1.0, [1.0], backend=backend)
    with pytest.raises(TypeError, match="x must be"):
        solver_step(x.long(), [], 1.0, [], backend=backend)


def test_unsupported_backends_raise():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="backend"):
        solver_step(x, [x], 1.0, [1.0], backend="nope")
    with pytest.raises((RuntimeError, ValueError), match="triton"):  # unavailable, or not for meta tensors
        solver_step(x.to("meta"), [x.to("meta")], 1.0, [1.0], backend="triton")
    with pytest.raises((RuntimeError, ValueError), match="cuda"):
        solver_step(x, [x], 1.0, [1.0], backend="cuda")


@parametrize_backends
def test_coefficients_must_be_host_numbers(backend, device):
    """Coefficients are host floats (no device sync per step); numpy scalars are numbers too."""
    x = torch.randn(3, 4, dtype=torch.float64, device=device)
    with pytest.raises(TypeError, match=r"bs\[0\]"):
        solver_step(x, [x], 1.0, [torch.tensor(0.5)], backend=backend)
    with pytest.raises(TypeError, match="a must"):
        solver_step(x, [x], True, [1.0], backend=backend)
    out = solver_step(x, [x], np.float32(0.5), [np.float64(0.25)], backend=backend)
    torch.testing.assert_close(out, 0.75 * x)


# ---------------------------------------------------------------------------------------------
# The compiled op: its own checks, gradients, opcheck and torch.compile.
# ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(not fastdiff.backends()["cpu"].available, reason="compiled extension not built")
class TestCompiledOp:
    op = staticmethod(lambda *args: torch.ops.fastdiff.solver_step(*args))

    def test_op_checks_its_arguments(self):
        x = torch.randn(2, 3)
        keys = torch.tensor([1, 2])
        with pytest.raises(ValueError, match=r"ks\[0\] has shape"):
            self.op(x, [torch.randn(3, 2)], 1.0, [1.0], None, [], [])
        with pytest.raises(TypeError, match=r"ks\[0\] has dtype"):
            self.op(x, [x.half()], 1.0, [1.0], None, [], [])
        with pytest.raises(ValueError, match="bs"):
            self.op(x, [x], 1.0, [], None, [], [])
        with pytest.raises(ValueError, match="triple"):
            self.op(x, [], 1.0, [], keys, [0, 0], [1.0])
        with pytest.raises(ValueError, match="need keys"):
            self.op(x, [], 1.0, [], None, [0, 0, 0], [1.0])
        with pytest.raises(ValueError, match="keys must have shape"):
            self.op(x, [], 1.0, [], torch.tensor([1, 2, 3]), [0, 0, 0], [1.0])
        with pytest.raises(TypeError, match="keys must be int64"):
            self.op(x, [], 1.0, [], keys.int(), [0, 0, 0], [1.0])
        with pytest.raises(ValueError, match="32-bit"):
            self.op(x, [], 1.0, [], keys, [0, -1, 0], [1.0])
        with pytest.raises(ValueError, match=f"at most {MAX_DRAWS}"):
            self.op(x, [], 1.0, [], keys, [0, 0, 0] * (MAX_DRAWS + 1), [1.0] * (MAX_DRAWS + 1))
        with pytest.raises(TypeError, match="x must be"):
            self.op(x.int(), [], 1.0, [], None, [], [])

    @pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
    def test_opcheck(self, dtype):
        x, k = (torch.randn(3, 5, dtype=dtype) for _ in range(2))
        keys = torch.tensor([5, -7, 2**40])
        args = (x, [k, k.t().contiguous().t()], 0.5, [1.5, -2.0], keys, [3, 0, 0, 3, 1, 0], [0.25, -0.5])
        torch.library.opcheck(torch.ops.fastdiff.solver_step, args)
        torch.library.opcheck(torch.ops.fastdiff.solver_step, (x, [k], 0.5, [1.5], None, [], []))

    def test_gradients(self):
        x, k = (torch.randn(4, 6, dtype=torch.float64, requires_grad=True) for _ in range(2))
        keys = torch.tensor([1, 2, 3, 4])
        torch.autograd.gradcheck(lambda x, k: self.op(x, [k], 0.3, [-1.7], keys, [0, 1, 0], [0.9]), (x, k))
        out = solver_step(x, [k], 0.3, [-1.7], backend="cpu")
        out.sum().backward()
        torch.testing.assert_close(x.grad, torch.full_like(x, 0.3))
        torch.testing.assert_close(k.grad, torch.full_like(k, -1.7))

    def test_compiles_without_graph_breaks(self):
        source = CounterNoise([3, 1, 4], torch.device("cpu"))
        sigma = torch.tensor(1.0)

        def step(x, k):
            noise = [(0.1, NoiseDraw(source, 2, 0, sigma, sigma))]
            return solver_step(x * 2.0, [k], 0.5, [math.pi], noise=noise, backend="auto") + 1.0

        x, k = torch.randn(3, 8), torch.randn(3, 8)
        compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
        torch.testing.assert_close(compiled(x, k), step(x, k), rtol=0, atol=0)


def reference_normals_at(seed: int, elements: torch.Tensor, step: int, stage: int, stream: int) -> torch.Tensor:
    """float64 reference normals of chosen element indices of one sample (no need to generate the rest)."""
    key = philox_reference.MASK32 & seed, (seed >> 32) & philox_reference.MASK32
    g = elements // 4
    const = torch.full_like(g, 0)
    words = philox_reference.philox4x32((g, const + step, const + stage, const + stream), (const + key[0], const + key[1]))
    u = [philox_reference.uniform_from_bits(w, torch.float64) for w in words]
    lane = elements % 4
    radius = torch.where(lane < 2, torch.sqrt(-2 * torch.log(u[0])), torch.sqrt(-2 * torch.log(u[2])))
    angle = 2 * math.pi * torch.where(lane < 2, u[1], u[3])
    return radius * torch.where(lane % 2 == 0, torch.cos(angle), torch.sin(angle))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="2^31-element tensors are tested on a GPU")
@pytest.mark.parametrize("backend", ["cuda", "triton"])
def test_tensors_over_2_31_elements(backend):
    """int64 indexing: the last elements of a 2^31 + 12-element bfloat16 step, noise included."""
    status = fastdiff.backends()[backend]
    if not status.available:
        pytest.skip(f"backend {backend!r} unavailable: {status.reason}")
    per_sample = (1 << 30) + 6
    x = torch.ones(2, per_sample, dtype=torch.bfloat16, device="cuda")
    k = torch.full_like(x, 0.5)
    seeds = [12345, 2**63 + 1]
    draw = NoiseDraw(CounterNoise(seeds, torch.device("cuda")), 3, 1, torch.tensor(1.0), torch.tensor(1.0))
    out = solver_step(x, [k], 2.0, [-1.0], noise=[(0.25, draw)], backend=backend)
    tail = torch.arange(per_sample - 9, per_sample)
    expected = 1.5 + 0.25 * reference_normals_at(seeds[1], tail, 3, 1, 0)
    torch.testing.assert_close(out[1, -9:].double().cpu(), expected, rtol=1e-2, atol=1e-2)
    del out
