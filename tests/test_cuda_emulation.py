"""The CUDA kernels (csrc/cuda/*.cu) without a GPU: their device code compiled as plain C++ by g++ against
tests/cuda_emulation/host_emulation.h (blocks in turn, a block's threads as coroutines meeting at every barrier and
warp shuffle), called through their launch_* functions on CPU buffers, and compared with the float64 references
on fresh random inputs: odd sizes, several batch sizes and parts per sample, every dtype, outputs poisoned with NaN.
Tolerances are those of the CPU-kernel tests. A GPU run of tests/test_<op>.py checks the same kernels on the device.
"""

from __future__ import annotations

import ctypes
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from poison import stable_seed

from fastdiff.brownian_tree import increment_weights
from fastdiff.dtypes import working_dtype
from fastdiff.ops.brownian import BrownianNoise
from fastdiff.ops.solver_step import MAX_DRAWS
from fastdiff.reference import ito_step as ito_reference
from fastdiff.reference import trace_step as trace_reference
from fastdiff.reference.philox import philox_normal

ROOT = Path(__file__).resolve().parents[1]
EMULATION = Path(__file__).resolve().parent / "cuda_emulation"
SOURCES = ["philox", "solver_step", "ito_step", "trace_step"]
DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16]
DTYPE_CODE = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}  # csrc/cuda/launchers.h DType
# kernel<<<grid, block, smem, stream>>>(: the launch syntax C++ cannot parse, spelt as the emulation's launch call.
P, I32, I64, U32P, F64P = ctypes.c_void_p, ctypes.c_int, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p
# The C signatures of tests/cuda_emulation/entry_points.cpp.
SIGNATURES = {
    "emu_philox_normal": [P, I64, I64, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_uint32, I32, P],
    "emu_solver_step": [P, ctypes.c_double, P, F64P, I32, P, I32, U32P, U32P, U32P, F64P, I64, I64, I32, P],
    "emu_ito_workspace": [I64, I64, I32, I32],
    "emu_ito_step": [P, I32, I32, F64P, U32P, P, F64P, F64P, P, P, I64, I64, I32, P, P, P, P],
    "emu_trace_workspace": [I64, I64],
    "emu_trace_step": [P, P, F64P, I32, P, I64, P, U32P, I32, P, F64P, I64, I64, I32, P, P, P],
}
CHEVRONS = re.compile(r"([A-Za-z_]\w*(?:<[^;{}()]*?>)?)<<<(.*?)>>>\(", re.S)


def emulated_source(cu: Path) -> str:
    """The .cu file with its launches rewritten, and a #line directive so that diagnostics name the .cu file."""
    text = cu.read_text()
    rewritten, launches = CHEVRONS.subn(r"::fastdiff_emulation::launch(\1, \2)(", text)
    assert launches > 0 and "<<<" not in rewritten, f"{cu.name}: a kernel launch the rewrite does not recognise"
    return f'#line 1 "{cu}"\n' + rewritten


@pytest.fixture(scope="session")
def emulated(tmp_path_factory) -> ctypes.CDLL:
    """The shared library of the emulated launchers, built once per session."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ not found: the CUDA host emulation needs a C++17 compiler")
    build = tmp_path_factory.mktemp("cuda_emulation")
    flags = ["-std=c++17", "-O2", "-fPIC", "-Wall", "-Wno-unknown-pragmas", "-Wno-sign-compare", "-pthread",
             f"-I{EMULATION / 'include'}", f"-I{ROOT / 'csrc' / 'cuda'}"]
    jobs = []
    for name in SOURCES:
        cpp = build / f"{name}.cpp"
        cpp.write_text(emulated_source(ROOT / "csrc" / "cuda" / f"{name}.cu"))
        jobs.append((build / f"{name}.o", cpp))
    jobs.append((build / "entry_points.o", EMULATION / "entry_points.cpp"))
    procs = [(obj, subprocess.Popen([gxx, *flags, "-c", str(src), "-o", str(obj)], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True)) for obj, src in jobs]
    for obj, proc in procs:
        log, _ = proc.communicate()
        assert proc.returncode == 0, f"g++ failed on {obj.stem}:\n{log}"
    lib = build / "libfastdiff_emulated.so"
    subprocess.run([gxx, "-shared", "-pthread", "-o", str(lib), *(str(obj) for obj, _ in procs)], check=True)
    so = ctypes.CDLL(str(lib))
    so.emu_reverse_thread_order.argtypes = [I32]
    so.emu_reverse_thread_order.restype = None
    for name, args in SIGNATURES.items():
        getattr(so, name).argtypes = args
        getattr(so, name).restype = ctypes.c_int64 if name.endswith("_workspace") else ctypes.c_int
    return so


def ptr(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def ptr_array(tensors) -> ctypes.Array:
    return (ctypes.c_void_p * max(1, len(tensors)))(*[t.data_ptr() for t in tensors])


def doubles(values) -> ctypes.Array:
    values = list(values)
    return (ctypes.c_double * max(1, len(values)))(*values)


def words(values) -> ctypes.Array:
    values = list(values)
    return (ctypes.c_uint32 * max(1, len(values)))(*values)


def poisoned(shape, dtype) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype)


def fresh(shape, dtype, g) -> torch.Tensor:
    return torch.randn(shape, dtype=torch.float64, generator=g).to(dtype)


def seeds(batch: int, g) -> torch.Tensor:
    """Per-sample int64 seeds spanning the whole 64-bit range (both key words)."""
    return torch.randint(-(2**63), 2**63 - 1, (batch,), dtype=torch.int64, generator=g)


# philox_normal (tests/test_philox.py's tolerances: absolute, plus the storage rounding of 16-bit outputs).
NORMAL_TOL = {torch.float64: (1e-13, 0.0), torch.float32: (2e-6, 0.0), torch.float16: (2e-6, 2.0**-11),
              torch.bfloat16: (2e-6, 2.0**-8)}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("batch", "numel"), [(1, 1), (3, 7), (2, 1029)])
def test_philox_normal(emulated, dtype, batch, numel):
    g = torch.Generator().manual_seed(stable_seed("philox", dtype, batch, numel))
    keys = seeds(batch, g)
    out = poisoned((batch, numel), dtype)
    assert emulated.emu_philox_normal(ptr(keys), batch, numel, 3, 1, 2, DTYPE_CODE[dtype], ptr(out)) == 0
    expected = philox_normal(keys, numel, 3, 1, 2, torch.float64)
    atol, rtol = NORMAL_TOL[dtype]
    torch.testing.assert_close(out.double(), expected, rtol=rtol, atol=atol)


# solver_step (tests/test_solver_step.py's NOISE_TOL).
SOLVER_TOL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("batch", "per_sample", "num_terms", "draws"),
                         [(1, 5, 0, 1), (3, 8, 2, 0), (2, 1027, 3, 2), (2, 516, 9, 4), (2, 37, 1, MAX_DRAWS)])
def test_solver_step(emulated, dtype, batch, per_sample, num_terms, draws):
    """Odd sizes take the scalar path, per_sample % 4 == 0 the vector path; 9 terms run two passes."""
    g = torch.Generator().manual_seed(stable_seed("solver", dtype, batch, per_sample, num_terms, draws))
    x = fresh((batch, per_sample), dtype, g)
    terms = [fresh((batch, per_sample), dtype, g) for _ in range(num_terms)]
    a, *coefs = (torch.rand(num_terms + 1, dtype=torch.float64, generator=g) * 3 - 1.5).tolist()
    draw_coefs = (torch.rand(draws, dtype=torch.float64, generator=g) - 0.5).tolist()
    counters = [(5 + d, d, 3 * d) for d in range(draws)]
    keys = seeds(batch, g)
    out = poisoned((batch, per_sample), dtype)
    err = emulated.emu_solver_step(ptr(x), a, ptr_array(terms), doubles(coefs), num_terms, ptr(keys), draws,
                                   words(c[0] for c in counters), words(c[1] for c in counters),
                                   words(c[2] for c in counters), doubles(draw_coefs), batch,
                                   per_sample, DTYPE_CODE[dtype], ptr(out))
    assert err == 0
    expected = a * x.double() + sum(c * t.double() for c, t in zip(coefs, terms, strict=True))
    for c, (step, stage, stream) in zip(draw_coefs, counters, strict=True):
        expected = expected + c * philox_normal(keys, per_sample, step, stage, stream, torch.float64)
    tol = SOLVER_TOL[dtype]
    torch.testing.assert_close(out.double(), expected, rtol=tol, atol=tol * float(expected.abs().max()))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_solver_step_brownian_increment(emulated, dtype):
    """A Brownian increment (fastdiff.brownian_tree: ~2 depth weighted counter draws) through the CUDA solver step
    equals the reference backend's draw of the same interval."""
    g = torch.Generator().manual_seed(stable_seed("brownian", dtype))
    batch, per_sample = 3, 45
    x = fresh((batch, per_sample), dtype, g)
    keys = seeds(batch, g)
    weights = increment_weights(5.0, 3.0)
    out = poisoned((batch, per_sample), dtype)
    err = emulated.emu_solver_step(ptr(x), 0.5, ptr_array([]), doubles([]), 0, ptr(keys), len(weights),
                                   words(step for (_, step, _), _ in weights), words(stage for (_, _, stage), _ in weights),
                                   words(stream for (stream, _, _), _ in weights), doubles(0.7 * w for _, w in weights),
                                   batch, per_sample, DTYPE_CODE[dtype], ptr(out))
    assert err == 0
    z = BrownianNoise(keys, "reference").draw(x.double(), 0, 0, 5.0, 3.0)
    expected = 0.5 * x.double() + 0.7 * z
    tol = SOLVER_TOL[dtype]
    torch.testing.assert_close(out.double(), expected, rtol=tol, atol=tol * float(expected.abs().max()))


# ito_step (tests/test_ito_step.py's tolerances, relative to the output's largest value).
ITO_X_TOL = {torch.float64: 1e-12, torch.float32: 2e-6, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
ITO_STAT_TOL = {torch.float64: 1e-10, torch.float32: 5e-5, torch.float16: 5e-5, torch.bfloat16: 5e-5}
SIGMA, SIGMA_NEXT = 1.3, 0.9


def run_ito(emulated, x, denoised, ell, keys, mode, temperature, log_weights, bias, draw=(5, 1, 2)):
    batch, m = x.shape[0], len(denoised)
    per_sample = x[0].numel()
    delta = (SIGMA - SIGMA_NEXT) * (SIGMA + SIGMA_NEXT)
    scalars = [delta, math.sqrt(delta), 1.0 / SIGMA**2, temperature, 1e-6]
    code = 1 if mode == "and" else 0
    workspace = poisoned((max(1, emulated.emu_ito_workspace(batch, per_sample, m, code)),), torch.float64)
    out, ell_next, kappa = poisoned(x.shape, x.dtype), poisoned(ell.shape, ell.dtype), poisoned(ell.shape, ell.dtype)
    err = emulated.emu_ito_step(ptr(x), m, code, doubles(scalars), words(draw), ptr_array(denoised), doubles(log_weights),
                                doubles(bias), ptr(ell), ptr(keys), batch, per_sample,
                                DTYPE_CODE[x.dtype], ptr(workspace), ptr(out), ptr(ell_next), ptr(kappa))
    assert err == 0
    return out, ell_next, kappa


def ito_inputs(shape, dtype, m, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, dtype=torch.float64, generator=g)
    denoised = [(x + torch.randn(shape, dtype=torch.float64, generator=g)).to(dtype) for _ in range(m)]
    ell = torch.randn(shape[0], m, dtype=torch.float64, generator=g).to(working_dtype(dtype))
    per_model = torch.randn(m, dtype=torch.float64, generator=g).tolist()
    return x.to(dtype), denoised, ell, seeds(shape[0], g), per_model


ITO_CASES = [("or", 1), ("or", 2), ("and", 2), ("and", 3)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize(("mode", "m"), ITO_CASES, ids=[f"{c}{m}" for c, m in ITO_CASES])
@pytest.mark.parametrize("shape", [(3, 5), (1, 1024), (2, 3, 7, 11), (2, 9001), (2, 8200)], ids=str)
def test_ito_step(emulated, dtype, mode, m, shape):
    """Sizes that are multiples of four take the vector loads; (2, 9001) and (2, 8200) span two parts per sample."""
    check_ito(emulated, dtype, mode, m, shape)


@pytest.mark.parametrize(("mode", "m", "dtype", "shape"),
                         [("or", 8, torch.float32, (2, 300)), ("and", 8, torch.float64, (2, 301)),
                          ("and", 7, torch.float64, (1, 300)), ("and", 8, torch.float32, (2, 300)),
                          ("and", 5, torch.bfloat16, (2, 301)), ("or", 6, torch.float16, (2, 300))], ids=str)
def test_ito_step_many_models(emulated, mode, m, dtype, shape):
    check_ito(emulated, dtype, mode, m, shape)


def test_ito_step_misaligned_buffers(emulated):
    """Buffers one element past an aligned address: the scalar loads, same results."""
    check_ito(emulated, torch.float32, "and", 3, (2, 400), misalign=True)
    check_ito(emulated, torch.float16, "or", 2, (2, 400), misalign=True)


def misaligned(t: torch.Tensor) -> torch.Tensor:
    """A copy of t whose data starts one element past the start of its storage."""
    out = torch.empty(t.numel() + 1, dtype=t.dtype)[1:].view(t.shape)
    out.copy_(t)
    return out


def check_ito(emulated, dtype, mode, m, shape, misalign=False):
    x, denoised, ell, keys, per_model = ito_inputs(shape, dtype, m, stable_seed("ito", dtype, mode, m, shape))
    if misalign:
        x, denoised = misaligned(x), [misaligned(d) for d in denoised]
    temperature, log_weights, bias = (1.0, [0.0] * m, per_model) if mode == "and" else (0.7, per_model, [0.0] * m)
    out = run_ito(emulated, x, denoised, ell, keys, mode, temperature, log_weights, bias)
    expected = ito_reference.ito_step(x.double(), [d.double() for d in denoised], SIGMA, SIGMA_NEXT, ell.double(), keys,
                                      (5, 1, 2), mode, temperature=temperature, log_weights=log_weights, bias=bias,
                                      rcond=1e-6)
    flat = x.double().flatten(1)
    delta = (SIGMA - SIGMA_NEXT) * (SIGMA + SIGMA_NEXT)
    terms = max(float(((d.double().flatten(1) - flat) ** 2).sum(1).max()) for d in denoised) * delta / SIGMA**4
    (x_next, ell_next, kappa), (ref_x, ref_ell, ref_kappa) = out, expected
    torch.testing.assert_close(x_next.double(), ref_x, rtol=0, atol=ITO_X_TOL[dtype] * float(ref_x.abs().max()))
    stat_tol = ITO_STAT_TOL[dtype]
    torch.testing.assert_close(ell_next.double(), ref_ell, rtol=0, atol=stat_tol * max(terms, float(ref_ell.abs().max())))
    torch.testing.assert_close(kappa.double(), ref_kappa, rtol=0, atol=stat_tol * max(1.0, float(ref_kappa.abs().max())))


def test_ito_step_is_deterministic_and_batch_invariant(emulated):
    x, denoised, ell, keys, per_model = ito_inputs((3, 9001), torch.float32, 3, 11)
    args = ("and", 1.0, [0.0] * 3, per_model)
    first = run_ito(emulated, x, denoised, ell, keys, *args)
    again = run_ito(emulated, x, denoised, ell, keys, *args)
    one = run_ito(emulated, x[1:2], [d[1:2] for d in denoised], ell[1:2], keys[1:2], *args)
    for a, b, c in zip(first, again, one, strict=True):
        assert torch.equal(a, b) and torch.equal(a[1:2], c)


# trace_step (tests/test_trace_step.py's tolerances: x_out relative to max |a x| + sum |b k|, the total to the dot's
# scale mean_p sum |u_p| |v_p|).
TRACE_X_TOL = {torch.float64: 1e-14, torch.float32: 1e-6, torch.float16: 4e-3, torch.bfloat16: 3e-2}
TRACE_DOT_TOL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.float16: 2e-5, torch.bfloat16: 2e-5}


def run_trace(emulated, x, terms, a, coefs, u, keys, step, stage, kind, total, c, w):
    batch, per_sample = x.shape[0], x[0].numel()
    out, total_out = poisoned(x.shape, x.dtype), poisoned(total.shape, torch.float64)
    workspace = poisoned((emulated.emu_trace_workspace(batch, per_sample),), torch.float64)
    err = emulated.emu_trace_step(ptr(x), ptr_array(terms), doubles(coefs), len(terms), ptr(u), u.shape[0],
                                  ptr(keys), words([step, stage]), int(kind == "gaussian"), ptr(total), doubles([a, c, w]),
                                  batch, per_sample, DTYPE_CODE[x.dtype], ptr(out),
                                  ptr(total_out), ptr(workspace))
    assert err == 0
    return out, total_out


def trace_operands(shape, dtype, probes, num_terms, seed):
    g = torch.Generator().manual_seed(seed)
    x = fresh(shape, dtype, g)
    terms = [fresh(shape, dtype, g) for _ in range(num_terms)]
    u = fresh((probes, *shape), dtype, g)
    total = torch.randn(shape[0], dtype=torch.float64, generator=g)
    a, *coefs = (torch.rand(num_terms + 1, dtype=torch.float64, generator=g) * 3 - 1.5).tolist()
    return x, terms, a, coefs, u, total, seeds(shape[0], g)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
@pytest.mark.parametrize(("shape", "probes", "num_terms"),
                         [((1, 1), 1, 0), ((3, 5), 2, 3), ((2, 1023), 1, 1), ((2, 3, 7, 11), 3, 8), ((2, 12289), 2, 2),
                          ((3, 8192), 1, 3)], ids=str)
def test_trace_step(emulated, dtype, kind, shape, probes, num_terms):
    """(2, 12289) and (3, 8192) span several parts per sample; (3, 8192) takes the vector loads."""
    check_trace(emulated, dtype, kind, shape, probes, num_terms)


def test_trace_step_misaligned_buffers(emulated):
    check_trace(emulated, torch.float32, "gaussian", (2, 8192), 2, 2, misalign=True)
    check_trace(emulated, torch.bfloat16, "rademacher", (3, 400), 1, 1, misalign=True)


def check_trace(emulated, dtype, kind, shape, probes, num_terms, misalign=False):
    x, terms, a, coefs, u, total, keys = trace_operands(shape, dtype, probes, num_terms,
                                                        stable_seed("trace", dtype, kind, shape))
    if misalign:
        x, u, terms = misaligned(x), misaligned(u), [misaligned(t) for t in terms]
    x_out, total_out = run_trace(emulated, x, terms, a, coefs, u, keys, 7, 1, kind, total, 0.25, -1.5)
    x64, u64, terms64 = x.double(), u.double(), [t.double() for t in terms]
    x_ref, total_ref = trace_reference.trace_step(x64, terms64, a, coefs, u64, keys, 7, 1, kind, total, 0.25, -1.5)
    x_scale = float((abs(a) * x64.abs() + sum(abs(b) * t.abs() for b, t in zip(coefs, terms64, strict=True))).max())
    assert (x_out.double() - x_ref).abs().max().item() <= TRACE_X_TOL[dtype] * x_scale + 1e-30
    v = trace_reference.probes(keys, x[0].numel(), probes, 7, 1, kind, torch.float64)
    dot_scale = 1.5 * (u64.reshape(v.shape).abs() * v.abs()).sum(-1).mean(0)
    bound = TRACE_DOT_TOL[dtype] * dot_scale + 1e-12 * (0.25 + total.abs())
    assert bool(((total_out - total_ref).abs() <= bound).all()), f"total off by {(total_out - total_ref).abs().max():g}"


def test_trace_step_is_deterministic_and_batch_invariant(emulated):
    x, terms, a, coefs, u, total, keys = trace_operands((3, 12289), torch.float32, 2, 2, 5)
    first = run_trace(emulated, x, terms, a, coefs, u, keys, 7, 1, "gaussian", total, 0.5, 1.0)
    again = run_trace(emulated, x, terms, a, coefs, u, keys, 7, 1, "gaussian", total, 0.5, 1.0)
    one = run_trace(emulated, x[1:2], [t[1:2] for t in terms], a, coefs, u[:, 1:2].contiguous(), keys[1:2], 7, 1,
                    "gaussian", total[1:2], 0.5, 1.0)
    for a_, b_, c_ in zip(first, again, one, strict=True):
        assert torch.equal(a_, b_) and torch.equal(a_[1:2], c_)


def test_results_hold_in_either_thread_order(emulated):
    """Threads resumed last to first: a read of another thread's shared-memory write that no barrier orders sees
    the previous launch's values (other inputs here), and the comparison with the reference fails."""
    emulated.emu_reverse_thread_order(1)
    try:
        check_ito(emulated, torch.float32, "or", 2, (2, 9001))
        check_ito(emulated, torch.float64, "and", 3, (3, 8200))
        check_trace(emulated, torch.float32, "gaussian", (3, 8192), 2, 2)
    finally:
        emulated.emu_reverse_thread_order(0)


def test_bad_launch_arguments_are_refused(emulated):
    """The launchers' own checks: an unknown mode or model count, a negative term count."""
    x, denoised, ell, keys, _ = ito_inputs((2, 9), torch.float32, 2, 1)
    out = poisoned(x.shape, x.dtype)
    workspace = torch.zeros(64, dtype=torch.float64)
    scalars, draw = doubles([0.5, 0.5**0.5, 1.0, 1.0, 0.0]), words([0, 0, 0])
    for mode, m in [(2, 2), (1, 1), (0, 9)]:
        err = emulated.emu_ito_step(ptr(x), m, mode, scalars, draw, ptr_array(denoised), doubles([0.0] * 9),
                                    doubles([0.0] * 9), ptr(ell), ptr(keys), 2, 9,
                                    0, ptr(workspace), ptr(out), ptr(ell), ptr(ell))
        assert err == 1, (mode, m)
    total = torch.zeros(2, dtype=torch.float64)
    err = emulated.emu_trace_step(ptr(x), ptr_array([]), doubles([]), -1, ptr(x), 1, ptr(keys),
                                  words([0, 0]), 0, ptr(total), doubles([1.0, 0.0, 1.0]), 2,
                                  9, 0, ptr(out), ptr(total), None)
    assert err == 1
