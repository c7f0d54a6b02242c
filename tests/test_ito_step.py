"""The fused Itô superposition step: every backend against the float64 reference on the same (rounded) inputs,
OR and AND with M = 1, 2, 3, odd sizes, several parts per sample, strided inputs, every dtype with dtype
tolerances, determinism, the degenerate AND case and argument errors. The Triton kernels run in the interpreter
on CPU tensors here, so their cases are few and small.
"""

from __future__ import annotations

import pytest
import torch
from backend_params import backend_params
from poison import poisoned_outputs

from fastdiff import _extension
from fastdiff.dtypes import working_dtype
from fastdiff.ops.ito_step import ito_step
from fastdiff.ops.philox import CounterNoise
from fastdiff.ops.solver_step import NoiseDraw
from fastdiff.reference import ito_step as reference
from fastdiff.reference.philox import philox_normal

BACKENDS = backend_params(include_reference=False)
SIGMA, SIGMA_NEXT = 1.3, 0.9
# Tolerances relative to the largest value of the output: x' is stored in its dtype; ell' and kappa are float32
# sums over the sample (float64 for float64 inputs).
X_TOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
STAT_TOL = {torch.float64: 1e-10, torch.float32: 5e-5, torch.float16: 5e-5, torch.bfloat16: 5e-5}
CASES = [("or", 1), ("or", 2), ("and", 2), ("and", 3)]


def inputs(shape, dtype, mode, m, seed, device="cpu"):
    """x, D_i = x + N(0, 1) (scores of size 1/sigma^2), ell, per-model log-weights / bias, the noise draw."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, dtype=torch.float64, generator=g)
    denoised = [(x + torch.randn(shape, dtype=torch.float64, generator=g)).to(device, dtype) for _ in range(m)]
    acc = working_dtype(dtype)
    ell = (torch.randn(shape[0], m, dtype=torch.float64, generator=g)).to(device, acc)
    per_model = torch.randn(m, dtype=torch.float64, generator=g).tolist()
    options = {"bias": per_model} if mode == "and" else {"log_weights": per_model, "temperature": 0.7}
    source = CounterNoise([7 + 1000 * b for b in range(shape[0])], torch.device(device))
    return x.to(device, dtype), denoised, ell, options, NoiseDraw(source, 5, 1, SIGMA, SIGMA_NEXT)


def float64_reference(x, denoised, ell, draw, mode, options):
    """The reference in float64 on the given (already rounded) operands."""
    keys = draw.source.keys.cpu()
    return reference.ito_step(x.cpu().double(), [d.cpu().double() for d in denoised], SIGMA, SIGMA_NEXT, ell.cpu().double(),
                              keys, (draw.step, draw.stage, draw.source.stream), mode, rcond=1e-6, **options)


def check_close(out, expected, dtype, x, denoised):
    """ell' is compared at the scale of its largest term, Delta ||s_i||^2 (the sum's cancellation is not the kernel's)."""
    x_next, ell_next, kappa = out
    flat = x.cpu().double().flatten(1)
    delta = (SIGMA - SIGMA_NEXT) * (SIGMA + SIGMA_NEXT)
    terms = max(float(((d.cpu().double().flatten(1) - flat) ** 2).sum(1).max()) for d in denoised) * delta / SIGMA**4
    ref_x, ref_ell, ref_kappa = expected
    assert x_next.dtype == dtype and x_next.shape == ref_x.shape and x_next.is_contiguous()
    assert ell_next.dtype == working_dtype(dtype) and kappa.dtype == ell_next.dtype
    assert torch.isfinite(x_next).all() and torch.isfinite(ell_next).all() and torch.isfinite(kappa).all()
    x_tol = X_TOL[dtype] * float(ref_x.abs().max())
    torch.testing.assert_close(x_next.cpu().double(), ref_x, rtol=0, atol=x_tol)
    ell_tol = STAT_TOL[dtype] * max(terms, float(ref_ell.abs().max()))
    torch.testing.assert_close(ell_next.cpu().double(), ref_ell, rtol=0, atol=ell_tol)
    kappa_tol = STAT_TOL[dtype] * max(1.0, float(ref_kappa.abs().max()))
    torch.testing.assert_close(kappa.cpu().double(), ref_kappa, rtol=0, atol=kappa_tol)


def run_case(backend, device, dtype, mode, m, shape, seed=0):
    x, denoised, ell, options, draw = inputs(shape, dtype, mode, m, seed, device)
    with poisoned_outputs():
        out = ito_step(x, denoised, SIGMA, SIGMA_NEXT, ell, draw, mode, backend=backend, **options)
    check_close(out, float64_reference(x, denoised, ell, draw, mode, options), dtype, x, denoised)
    return out


COMPILED = [p for p in BACKENDS if p.values[0] != "triton"]
TRITON = [p for p in BACKENDS if p.values[0] == "triton"]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]


@pytest.mark.parametrize(("backend", "device"), COMPILED)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("mode", "m"), CASES, ids=[f"{c}{m}" for c, m in CASES])
@pytest.mark.parametrize("shape", [(3, 5), (2, 1023), (4, 3, 7, 11), (2, 20_001)], ids=str)
def test_matches_float64_reference(backend, device, dtype, mode, m, shape):
    """(2, 20001) spans several parts per sample in every backend's partition."""
    run_case(backend, device, dtype, mode, m, shape)


TRITON_CASES = [
    ("or", 2, torch.float32, (3, 5)),
    ("and", 2, torch.float64, (2, 1023)),
    ("and", 3, torch.float16, (3, 5)),
    ("or", 1, torch.bfloat16, (3, 5)),
    ("and", 2, torch.bfloat16, (2, 37)),
    ("or", 1, torch.float32, (1, 8200)),  # two parts
]


@pytest.mark.parametrize(("backend", "device"), TRITON)
@pytest.mark.parametrize(("mode", "m", "dtype", "shape"), TRITON_CASES, ids=lambda v: str(v))
def test_triton_matches_float64_reference(backend, device, mode, m, dtype, shape):
    run_case(backend, device, dtype, mode, m, shape)


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_strided_inputs(backend, device):
    g = torch.Generator().manual_seed(3)
    base = [torch.randn(40, 30, dtype=torch.float64, generator=g).to(device) for _ in range(3)]
    x = base[0][::2, ::3].t()[:, :20]  # [10, 20], transposed and strided
    denoised = [x + base[1][:20, :10].t(), base[2][5:15, 3:23]]  # a transposed operand and an offset slice
    assert not x.is_contiguous() and not denoised[1].is_contiguous()
    assert x.shape == denoised[0].shape == denoised[1].shape == (10, 20)
    ell = torch.zeros(x.shape[0], 2, dtype=torch.float64, device=device)
    draw = NoiseDraw(CounterNoise(list(range(x.shape[0])), torch.device(device)), 0, 0, SIGMA, SIGMA_NEXT)
    for mode in ("or",) if backend == "triton" else ("or", "and"):
        with poisoned_outputs():
            out = ito_step(x, denoised, SIGMA, SIGMA_NEXT, ell, draw, mode, backend=backend)
        check_close(out, float64_reference(x, denoised, ell, draw, mode, {}), torch.float64, x, denoised)


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_deterministic(backend, device):
    shape = (1, 37) if backend == "triton" else (3, 50_001)
    x, denoised, ell, options, draw = inputs(shape, torch.float32, "and", 2, 4, device)
    first = ito_step(x, denoised, SIGMA, SIGMA_NEXT, ell, draw, "and", backend=backend, **options)
    second = ito_step(x, denoised, SIGMA, SIGMA_NEXT, ell, draw, "and", backend=backend, **options)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("backend", "device"), [pytest.param("reference", "cpu", id="reference-cpu"), *BACKENDS])
def test_and_with_coinciding_scores_is_regularized(backend, device):
    """||s_1 - s_2|| = 0 exactly: kappa = (1/2, 1/2) and the step is the single-model step; 1e-9 apart: finite."""
    x, denoised, _, _, draw = inputs((2, 37), torch.float64, "and", 1, 5, device)
    ell = torch.zeros(2, 2, dtype=torch.float64, device=device)
    out = ito_step(x, [denoised[0], denoised[0]], SIGMA, SIGMA_NEXT, ell, draw, "and", backend=backend)
    single = ito_step(x, denoised, SIGMA, SIGMA_NEXT, ell[:, :1], draw, "or", backend=backend)
    torch.testing.assert_close(out.kappa, torch.full_like(out.kappa, 0.5), rtol=0, atol=1e-12)
    torch.testing.assert_close(out.x_next, single.x_next, rtol=0, atol=1e-12)
    torch.testing.assert_close(out.ell_next, single.ell_next.expand(-1, 2), rtol=0, atol=1e-12)
    near = [denoised[0], denoised[0] + 1e-9 * torch.linspace(-1, 1, 37, dtype=torch.float64, device=device)]
    out = ito_step(x, near, SIGMA, SIGMA_NEXT, ell, draw, "and", backend=backend)
    assert torch.isfinite(out.x_next).all() and torch.isfinite(out.kappa).all()
    # the move differs from the averaged one only along ds, by at most the noise component along it
    assert float((out.x_next - single.x_next).abs().max()) < 5.0


def test_closed_form_equals_bordered_system():
    g = torch.Generator().manual_seed(6)
    scores = torch.randn(5, 2, 33, dtype=torch.float64, generator=g)
    z = torch.randn(5, 33, dtype=torch.float64, generator=g)
    ell = torch.randn(5, 2, dtype=torch.float64, generator=g)
    bias = torch.tensor([0.3, -0.2], dtype=torch.float64)
    for rcond in (0.0, 1e-3):
        pair = reference.and_weights_pair(scores, z, 0.4, ell, bias, rcond)
        system = reference.and_weights_system(scores @ scores.mT, (scores @ z[:, :, None]).squeeze(-1), 0.4, ell, bias, rcond)
        torch.testing.assert_close(pair, system, rtol=1e-10, atol=1e-10)
    # the weights do what they are for: after the step, ell_i - bias_i agree (rcond = 0)
    x = torch.zeros(5, 33, dtype=torch.float64)
    keys = torch.arange(5)
    z = philox_normal(keys, 33, 0, 0, 0, torch.float64)
    d = [x + 0.4**2 * scores[:, i] for i in range(2)]
    _, ell_next, _ = reference.ito_step(x, d, 0.4, 0.2, ell, keys, (0, 0, 0), "and", bias=bias.tolist(), rcond=0.0)
    gaps = (ell_next - bias).diff(dim=1)
    torch.testing.assert_close(gaps, torch.zeros_like(gaps), rtol=0, atol=1e-9)


def test_or_weights_are_a_stable_softmax():
    ell = torch.tensor([[1000.0, 999.0], [-1e4, -1e4]], dtype=torch.float64)
    kappa = reference.or_weights(ell, 1.0, torch.zeros(2, dtype=torch.float64))
    assert torch.isfinite(kappa).all()
    torch.testing.assert_close(kappa[1], torch.tensor([0.5, 0.5], dtype=torch.float64))


@pytest.mark.parametrize(("backend", "device"), [pytest.param("reference", "cpu", id="reference-cpu"), *COMPILED])
def test_bad_inputs_raise_naming_the_argument(backend, device):
    x, denoised, ell, _, draw = inputs((2, 9), torch.float32, "and", 2, 7, device)

    def call(**changes):
        args = dict(x=x, denoised=denoised, sigma=SIGMA, sigma_next=SIGMA_NEXT, ell=ell, noise=draw, mode="and")
        args.update(changes)
        return ito_step(**args, backend=backend)

    with pytest.raises(ValueError, match=r"denoised\[1\] must have x's shape"):
        call(denoised=[denoised[0], denoised[1][:, :4]])
    with pytest.raises(TypeError, match=r"denoised\[0\] has dtype"):
        call(denoised=[denoised[0].double(), denoised[1]])
    with pytest.raises(ValueError, match="sigma > sigma_next"):
        call(sigma=0.5, sigma_next=0.9)
    with pytest.raises(ValueError, match="ell must be a torch.float32"):
        call(ell=ell.double())
    with pytest.raises(ValueError, match="mode 'and' needs 2"):
        call(denoised=denoised[:1], ell=ell[:, :1])
    with pytest.raises(ValueError, match="mode must be"):
        call(mode="xor")
    with pytest.raises(ValueError, match="bias needs one entry per model"):
        call(bias=[0.0])
    with pytest.raises(TypeError, match="temperature"):
        call(temperature=float("nan"))
    with pytest.raises(ValueError, match="rcond"):
        call(rcond=-1.0)
    with pytest.raises(TypeError, match="CounterNoise"):
        call(noise=None)
    with pytest.raises(ValueError, match="one seed per sample"):
        call(noise=NoiseDraw(CounterNoise([1, 2, 3], torch.device(device)), 0, 0, SIGMA, SIGMA_NEXT))


@pytest.mark.skipif(not _extension.loaded(), reason="compiled extension not built")
class TestCompiledOp:
    def test_op_checks_its_arguments(self):
        x = torch.randn(2, 8)
        d = [x + 1, x - 1]
        ell = torch.zeros(2, 2)
        keys = torch.arange(2)
        op = torch.ops.fastdiff.ito_step
        with pytest.raises(ValueError, match="denoised"):
            op(x, [d[0], d[1][:, :3]], 1.0, 0.5, ell, keys, [0, 0, 0], 1, 1.0, [0.0, 0.0], [0.0, 0.0], 1e-6)
        with pytest.raises(TypeError, match="ell must have dtype"):
            op(x, d, 1.0, 0.5, ell.double(), keys, [0, 0, 0], 1, 1.0, [0.0, 0.0], [0.0, 0.0], 1e-6)
        with pytest.raises(ValueError, match="32-bit"):
            op(x, d, 1.0, 0.5, ell, keys, [-1, 0, 0], 1, 1.0, [0.0, 0.0], [0.0, 0.0], 1e-6)
        with pytest.raises(ValueError, match="mode"):
            op(x, d, 1.0, 0.5, ell, keys, [0, 0, 0], 2, 1.0, [0.0, 0.0], [0.0, 0.0], 1e-6)
        with pytest.raises(ValueError, match="keys must have"):
            op(x, d, 1.0, 0.5, ell, keys[:1], [0, 0, 0], 1, 1.0, [0.0, 0.0], [0.0, 0.0], 1e-6)

    def test_opcheck(self):
        x = torch.randn(2, 40)
        args = (x, [x + 1, x * 0.5], 1.0, 0.5, torch.zeros(2, 2), torch.arange(2), [0, 0, 0], 1, 1.0, [0.0, 0.0],
                [0.0, 0.0], 1e-6)
        torch.library.opcheck(torch.ops.fastdiff.ito_step.default, args,
                              test_utils=("test_schema", "test_faketensor"))
