"""The Triton kernels (kernels/philox.py, kernels/solver_step.py) called directly, against the references.

Philox words bit for bit (Random123's known answers and `fastdiff.reference.philox.philox4x32`), normals
up to float rounding of log/sqrt/sin/cos, the fused solver step against a float64 evaluation on the
reference's noise, determinism and batch invariance. Without a CUDA device the kernels run in Triton's
interpreter on CPU tensors (slow: shapes stay tiny); on a GPU the same file runs them compiled.
"""

import os

import torch
from poison import stable_seed

if not torch.cuda.is_available():
    # Before any triton import: @triton.jit reads it when the kernels are defined.
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

pytest.importorskip("triton", reason="triton is not installed (pip install fastdiff[triton])")

from fastdiff.kernels import philox as kernels  # noqa: E402
from fastdiff.kernels.solver_step import solver_step  # noqa: E402

from fastdiff.reference import philox as reference  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
MASK32 = 0xFFFFFFFF


def as_keys(seeds: list[int]) -> torch.Tensor:
    """64-bit seeds as the int64 (two's complement) keys the kernels take."""
    return torch.tensor([s - 2**64 if s >= 2**63 else s for s in seeds], dtype=torch.int64, device=DEVICE)


# Both key words, the int64 sign bit set in the first and the last.
SEEDS = [0xDEADBEEFCAFEF00D, 0x0123456789ABCDEF, 2**63 + 7, 0, 2**32 - 1, 2**64 - 1]


# ---------------------------------------------------------------------------------------------
# Philox words
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ctr", "seed", "expected"),
    [
        ((0, 0, 0, 0), 0, (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((MASK32,) * 4, 2**64 - 1, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), 0x299F31D0_A4093822, (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    ],
    ids=["zeros", "ones", "pi"],
)
def test_words_known_answers(ctr, seed, expected):
    """Random123's kat_vectors for philox4x32-10; the key words are the seed's low and high halves."""
    c0, c1, c2, c3 = ctr
    words = kernels.philox_words(as_keys([seed]), 1, c1, c2, c3, first_group=c0)
    assert words.shape == (1, 1, 4) and words.dtype == torch.int64
    assert words.flatten().tolist() == list(expected)


@pytest.mark.parametrize(
    ("first_group", "step", "stage", "stream"),
    [(0, 0, 0, 0), (0, 7, 1, 2), (2**32 - 100, 2**32 - 1, 2**31, MASK32)],
    ids=["zero", "small", "wrapping"],
)
def test_words_match_reference(first_group, step, stage, stream):
    """300 groups (two programs, a masked tail), counters wrapping past 2^32 in the last case."""
    groups = 300
    keys = as_keys(SEEDS)
    words = kernels.philox_words(keys, groups, step, stage, stream, first_group=first_group)
    g = (torch.arange(groups, device=DEVICE) + first_group) & MASK32
    counter = tuple(torch.full_like(g, v) for v in (step, stage, stream))
    key = ((keys & MASK32)[:, None], ((keys >> 32) & MASK32)[:, None])
    expected = torch.stack(torch.broadcast_tensors(*reference.philox4x32((g, *counter), key)), dim=-1)
    assert words.shape == (len(SEEDS), groups, 4)
    assert torch.equal(words, expected)


# ---------------------------------------------------------------------------------------------
# Normals
# ---------------------------------------------------------------------------------------------
# Half an ulp, relative: the rounding error of a correctly rounded result in each dtype.
HALF_ULP = {torch.float64: 2.0**-53, torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}
DTYPES = list(HALF_ULP)
DTYPE_IDS = ["float64", "float32", "float16", "bfloat16"]
# Against the reference in the same dtype: float32 normals differ by the reference's rounding of the
# angle 2 pi u (up to 1.6e-6 after the radius; the kernel reduces the angle exactly), and float16/bfloat16
# by one ulp where the two float32 values straddle a rounding boundary.
AGAINST_REFERENCE = {
    torch.float64: {"atol": 1e-12, "rtol": 0.0},
    torch.float32: {"atol": 2e-6, "rtol": 0.0},
    torch.float16: {"atol": 2e-6, "rtol": 2.0**-10},
    torch.bfloat16: {"atol": 2e-6, "rtol": 2.0**-7},
}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("numel", [1, 7, 1023, 4097])
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_normals_match_reference(dtype, numel, batch):
    """Against the reference, and against float64 Box-Muller on the same words: float32 within 1e-6,
    narrower types correctly rounded from it (half an ulp)."""
    keys = as_keys(SEEDS[:batch])
    z = kernels.philox_normal(keys, numel, 11, 2**31 + 5, 1, dtype)
    assert z.shape == (batch, numel) and z.dtype == dtype and z.device == keys.device
    torch.testing.assert_close(z, reference.philox_normal(keys, numel, 11, 2**31 + 5, 1, dtype), **AGAINST_REFERENCE[dtype])
    exact = reference.philox_normal(keys, numel, 11, 2**31 + 5, 1, torch.float64)
    atol = 1e-12 if dtype == torch.float64 else 1e-6 if dtype == torch.float32 else 2e-6
    torch.testing.assert_close(z.double(), exact, atol=atol, rtol=HALF_ULP[dtype])


def test_normals_empty():
    assert kernels.philox_normal(as_keys(SEEDS), 0, 0, 0, 0).shape == (len(SEEDS), 0)
    assert kernels.philox_normal(as_keys([]), 5, 0, 0, 0).shape == (0, 5)


# ---------------------------------------------------------------------------------------------
# Solver step
# ---------------------------------------------------------------------------------------------
# The kernel sums in float32 (float64) and rounds once per pass. Allowed error: half an ulp of the result
# and of each intermediate pass, plus the arithmetic's error relative to the magnitude of the terms, in
# which a noise term counts at least |c| since float32 normals carry an absolute error of up to 2e-6.
ARITHMETIC_RTOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-5, torch.bfloat16: 1e-5}


def step_inputs(sample_shape: tuple[int, ...], num_ks: int, num_draws: int, dtype: torch.dtype, batch: int = 2):
    """Random operands (no zeros among the coefficients), draws with words above 2^31."""
    gen = torch.Generator().manual_seed(stable_seed(sample_shape, num_ks, num_draws))
    shape = (batch, *sample_shape)
    x = torch.randn(shape, generator=gen).to(DEVICE, dtype)
    ks = [torch.randn(shape, generator=gen).to(DEVICE, dtype) for _ in range(num_ks)]
    coefs = (0.1 + torch.rand(1 + num_ks + num_draws, generator=gen, dtype=torch.float64)).tolist()
    a, bs, cs = coefs[0], [(-1) ** i * b for i, b in enumerate(coefs[1 : 1 + num_ks])], coefs[1 + num_ks :]
    draws = [(3 + d, MASK32 - d, d % 2) for d in range(num_draws)]
    keys = as_keys(SEEDS[:batch]) if num_draws else None
    return x, ks, a, bs, keys, draws, cs


def expected_step(x, ks, a, bs, keys, draws, cs) -> tuple[torch.Tensor, torch.Tensor]:
    """(value, magnitude of its terms) in float64, with the reference's normals."""
    value, magnitude = a * x.double(), abs(a) * x.double().abs()
    for b, k in zip(bs, ks, strict=True):
        value, magnitude = value + b * k.double(), magnitude + abs(b) * k.double().abs()
    noise_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    for (step, stage, stream), c in zip(draws, cs, strict=True):
        z = reference.philox_normal(keys, x[0].numel(), step, stage, stream, noise_dtype).double().reshape(x.shape)
        value, magnitude = value + c * z, magnitude + abs(c) * (z.abs() + 1.0)
    return value, magnitude


# (per-sample shape, stage tensors, draws): sizes 1, 7, 1023, 4097; 0..4 draws; 9 stage tensors take two passes.
STEP_CASES = [((1,), 1, 0), ((7,), 9, 4), ((3, 11, 31), 1, 2), ((17, 241), 9, 1), ((1,), 1, 3), ((7,), 0, 2)]


@pytest.mark.parametrize(("sample_shape", "num_ks", "num_draws"), STEP_CASES)
@pytest.mark.parametrize("dtype", DTYPES, ids=DTYPE_IDS)
def test_solver_step_matches_float64(dtype, sample_shape, num_ks, num_draws):
    x, ks, a, bs, keys, draws, cs = step_inputs(sample_shape, num_ks, num_draws, dtype)
    out = solver_step(x, ks, a, bs, keys, draws, cs)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device and out.is_contiguous()
    assert out.data_ptr() != x.data_ptr()
    assert torch.isfinite(out).all()
    value, magnitude = expected_step(x, ks, a, bs, keys, draws, cs)
    passes = max(1, -(-num_ks // 8))
    allowed = HALF_ULP[dtype] * (value.abs() + (passes - 1) * magnitude) + ARITHMETIC_RTOL[dtype] * magnitude
    excess = ((out.double() - value).abs() / allowed).max().item()
    assert excess <= 1.0, f"error {excess:.3g} times the allowed bound"


def test_solver_step_deterministic_and_batch_invariant():
    """1500 elements per sample: two programs each; sample b alone gives the same bits as in the batch."""
    x, ks, a, bs, keys, draws, cs = step_inputs((1500,), 2, 2, torch.float32, batch=3)
    out = solver_step(x, ks, a, bs, keys, draws, cs)
    assert torch.equal(out, solver_step(x, ks, a, bs, keys, draws, cs))
    for b in range(3):
        alone = solver_step(x[b : b + 1], [k[b : b + 1] for k in ks], a, bs, keys[b : b + 1], draws, cs)
        assert torch.equal(alone[0], out[b])


def test_solver_step_empty():
    x = torch.empty((0, 5), device=DEVICE)
    assert solver_step(x, [x], 0.5, [1.0], as_keys([]), [(0, 0, 0)], [1.0]).shape == (0, 5)
