"""Counter-based Gaussians: an independent NumPy Philox4x32-10 against Random123's known answers,
the reference's words, and every available backend's normals; then distribution, determinism,
batch invariance and argument checks.

Every backend must reproduce the integer words exactly (checked by recovering the 23-bit uniforms
from float64 normals) and the normals up to float rounding of log/sqrt/sin/cos.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from backend_params import backend_params
from scipy import stats

import fastdiff
from fastdiff.ops.philox import philox_normal
from fastdiff.reference import philox as reference

MASK32 = np.uint64(0xFFFFFFFF)

# ---------------------------------------------------------------------------------------------
# Philox4x32-10 from the Random123 specification (Salmon et al. 2011, sec. 3.2), in uint64 NumPy:
# a round maps (x0, x1, x2, x3) to (hi(M1 x2) ^ x1 ^ k0, lo(M1 x2), hi(M0 x0) ^ x3 ^ k1, lo(M0 x0));
# the key advances by the Weyl increments (W0, W1) after every round.
# ---------------------------------------------------------------------------------------------
M0, M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
W0, W1 = np.uint64(0x9E3779B9), np.uint64(0xBB67AE85)


def np_philox(ctr: np.ndarray, key: np.ndarray) -> np.ndarray:
    """ctr [..., 4] and key [..., 2] (uint32 values in uint64 arrays, broadcastable) -> [..., 4]."""
    x = [ctr[..., i].astype(np.uint64) for i in range(4)]
    k0, k1 = key[..., 0].astype(np.uint64), key[..., 1].astype(np.uint64)
    for _ in range(10):
        prod0 = M0 * x[0]  # a 32x32-bit product fits in uint64
        prod1 = M1 * x[2]
        x = [(prod1 >> np.uint64(32)) ^ x[1] ^ k0, prod1 & MASK32, (prod0 >> np.uint64(32)) ^ x[3] ^ k1, prod0 & MASK32]
        k0 = (k0 + W0) & MASK32
        k1 = (k1 + W1) & MASK32
    return np.stack(np.broadcast_arrays(*x), axis=-1)


def np_words(seeds: list[int], numel: int, step: int, stage: int, stream: int) -> np.ndarray:
    """Philox words [B, groups, 4] of the fastdiff layout: key = 64-bit seed, counter = (g, step, stage, stream)."""
    groups = (numel + 3) // 4
    u64 = np.array([s % 2**64 for s in seeds], dtype=np.uint64)
    key = np.stack([u64 & MASK32, u64 >> np.uint64(32)], axis=-1)[:, None, :]
    ctr = np.zeros((1, groups, 4), dtype=np.uint64)
    ctr[..., 0] = np.arange(groups, dtype=np.uint64)
    ctr[..., 1], ctr[..., 2], ctr[..., 3] = step % 2**32, stage % 2**32, stream % 2**32
    return np_philox(ctr, key)


def np_normals(words: np.ndarray, numel: int) -> np.ndarray:
    """Box-Muller in float64 on the words: u = ((w >> 9) + 1/2) 2^-23; pairs (u0, u1) and (u2, u3)."""
    u = ((words >> np.uint64(9)).astype(np.float64) + 0.5) * 2.0**-23
    rad_a, rad_b = np.sqrt(-2 * np.log(u[..., 0])), np.sqrt(-2 * np.log(u[..., 2]))
    ang_a, ang_b = 2 * np.pi * u[..., 1], 2 * np.pi * u[..., 3]
    z = np.stack([rad_a * np.cos(ang_a), rad_a * np.sin(ang_a), rad_b * np.cos(ang_b), rad_b * np.sin(ang_b)], axis=-1)
    return z.reshape(words.shape[0], -1)[:, :numel]


def uniform_levels(z: np.ndarray) -> np.ndarray:
    """Invert Box-Muller on float64 normals [B, 4g]: the 23-bit integers (w >> 9) of words r0..r3, [B, g, 4]."""
    pairs = z.reshape(z.shape[0], -1, 2, 2)  # [B, g, pair, (cos, sin)]
    u_rad = np.exp(-0.5 * (pairs[..., 0] ** 2 + pairs[..., 1] ** 2))
    u_ang = np.mod(np.arctan2(pairs[..., 1], pairs[..., 0]) / (2 * np.pi), 1.0)
    u = np.stack([u_rad[..., 0], u_ang[..., 0], u_rad[..., 1], u_ang[..., 1]], axis=-1)
    return np.rint(u * 2.0**23 - 0.5).astype(np.int64) % 2**23


# Seeds that exercise both key words, including the sign bit of the int64 they travel in.
SEEDS = [0, 1, 2**32 - 1, 2**32, 0x0123456789ABCDEF, 2**63 - 1, 2**63, 2**64 - 1, 0xDEADBEEFCAFEF00D]


def as_keys(seeds: list[int], device: str = "cpu") -> torch.Tensor:
    return torch.tensor([s - 2**64 if s >= 2**63 else s for s in seeds], dtype=torch.int64, device=device)


# ---------------------------------------------------------------------------------------------
# Backends under test: every implementation on every device it runs on; missing ones are skipped.
# ---------------------------------------------------------------------------------------------


BACKENDS = backend_params()
parametrize_backends = pytest.mark.parametrize(("backend", "device"), BACKENDS)


# ---------------------------------------------------------------------------------------------
# The NumPy Philox itself, and the reference's raw words.
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("ctr", "key", "expected"),
    [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ],
    ids=["zeros", "ones", "pi"],
)
def test_numpy_philox_known_answers(ctr, key, expected):
    """Random123's kat_vectors for philox4x32-10."""
    got = np_philox(np.array(ctr, dtype=np.uint64), np.array(key, dtype=np.uint64))
    assert [int(v) for v in got] == list(expected)
    ref = reference.philox4x32(tuple(torch.tensor(c) for c in ctr), tuple(torch.tensor(k) for k in key))
    assert [int(v) for v in ref] == list(expected)


def test_reference_words_match_numpy_on_random_counters():
    rng = np.random.default_rng(1234)
    ctr = rng.integers(0, 2**32, size=(4096, 4), dtype=np.uint64)
    key = rng.integers(0, 2**32, size=(4096, 2), dtype=np.uint64)
    expected = np_philox(ctr, key)
    t_ctr = tuple(torch.from_numpy(ctr[:, i].astype(np.int64)) for i in range(4))
    t_key = tuple(torch.from_numpy(key[:, i].astype(np.int64)) for i in range(2))
    got = torch.stack(reference.philox4x32(t_ctr, t_key), dim=-1).numpy()
    np.testing.assert_array_equal(got.astype(np.uint64), expected)


def test_uniform_inversion_recovers_words():
    """The word-recovery used below is exact on the float64 NumPy normals themselves."""
    words = np_words(SEEDS, 4096, 5, 1, 0)
    np.testing.assert_array_equal(uniform_levels(np_normals(words, 4096)), (words >> np.uint64(9)).astype(np.int64))


# ---------------------------------------------------------------------------------------------
# Every backend against the NumPy implementation.
# ---------------------------------------------------------------------------------------------
# float32: the angle 2 pi u is rounded by up to 2^-22 (values in [4, 8)), times a radius of at most
# sqrt(-2 log 2^-24) = 5.8, plus a few ulps of the result: within 2e-6 absolute.
F32_ATOL = 2e-6
F64_ATOL = 1e-13


@parametrize_backends
@pytest.mark.parametrize(("step", "stage", "stream"), [(0, 0, 0), (7, 1, 0), (123456, 3, 1), (2**32 - 1, 2**31, 2**32 - 1)])
def test_backend_uniform_words_are_bit_exact(backend, device, step, stage, stream):
    numel = 4 * 2048
    z = philox_normal(as_keys(SEEDS, device), numel, step, stage, stream, torch.float64, backend=backend).cpu().numpy()
    words = np_words(SEEDS, numel, step, stage, stream)
    np.testing.assert_array_equal(uniform_levels(z), (words >> np.uint64(9)).astype(np.int64))


@parametrize_backends
@pytest.mark.parametrize(
    ("dtype", "atol", "rtol"),
    [
        (torch.float64, F64_ATOL, 0.0),
        (torch.float32, F32_ATOL, 0.0),
        (torch.float16, F32_ATOL, 2.0**-11),
        (torch.bfloat16, F32_ATOL, 2.0**-8),
    ],
    ids=["float64", "float32", "float16", "bfloat16"],
)
def test_backend_normals_match_numpy(backend, device, dtype, atol, rtol):
    numel = 4 * 2048 + 3
    z = philox_normal(as_keys(SEEDS, device), numel, 11, 2, 0, dtype, backend=backend)
    assert z.shape == (len(SEEDS), numel) and z.dtype == dtype and z.device.type == device
    expected = np_normals(np_words(SEEDS, numel, 11, 2, 0), numel)
    np.testing.assert_allclose(z.double().cpu().numpy(), expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("numel", [0, 1, 3, 5, 7, 1023, 4097])
@parametrize_backends
def test_odd_numel_is_a_prefix(backend, device, numel):
    keys = as_keys(SEEDS[:3], device)
    short = philox_normal(keys, numel, 3, 0, 0, torch.float64, backend=backend)
    long = philox_normal(keys, 4100, 3, 0, 0, torch.float64, backend=backend)
    assert short.shape == (3, numel)
    torch.testing.assert_close(short, long[:, :numel], rtol=0, atol=0)
    np.testing.assert_allclose(short.cpu().numpy(), np_normals(np_words(SEEDS[:3], numel, 3, 0, 0), numel), rtol=0, atol=F64_ATOL)


@parametrize_backends
def test_deterministic_and_batch_invariant(backend, device):
    k0, k1, k2 = as_keys([17, 2**63 + 5, 2**40 + 3], device)
    batch = philox_normal(torch.stack([k0, k1, k2]), 1001, 4, 1, 0, backend=backend)
    again = philox_normal(torch.stack([k0, k1, k2]), 1001, 4, 1, 0, backend=backend)
    single = philox_normal(k1.reshape(1), 1001, 4, 1, 0, backend=backend)
    assert torch.equal(batch, again)
    assert torch.equal(batch[1:2], single)
    reordered = philox_normal(torch.stack([k2, k1]), 1001, 4, 1, 0, backend=backend)
    assert torch.equal(reordered[1], batch[1]) and torch.equal(reordered[0], batch[2])


@parametrize_backends
def test_non_contiguous_keys(backend, device):
    keys = as_keys(SEEDS * 2, device)
    strided = keys[::2]
    assert not strided.is_contiguous()
    torch.testing.assert_close(
        philox_normal(strided, 99, 0, 0, 0, backend=backend), philox_normal(strided.clone(), 99, 0, 0, 0, backend=backend)
    )


def test_backends_agree_bitwise_in_float64_within_rounding():
    """Compiled and reference float64 normals differ by libm rounding only."""
    if not fastdiff.backends()["cpu"].available:
        pytest.skip(f"cpu backend: {fastdiff.backends()['cpu'].reason}")
    keys = as_keys(SEEDS)
    ref = philox_normal(keys, 10_000, 9, 1, 1, torch.float64, backend="reference")
    cpu = philox_normal(keys, 10_000, 9, 1, 1, torch.float64, backend="cpu")
    torch.testing.assert_close(cpu, ref, rtol=0, atol=F64_ATOL)


# ---------------------------------------------------------------------------------------------
# Distribution: moments, Kolmogorov-Smirnov, and independence across counter fields and keys.
# Fixed seeds make these deterministic; thresholds are 5 standard errors.
# ---------------------------------------------------------------------------------------------
N_DIST = 1 << 18


@parametrize_backends
def test_distribution_is_standard_normal(backend, device):
    z = philox_normal(as_keys([42, 2**63 + 42], device), N_DIST // 2, 0, 0, 0, torch.float64, backend=backend)
    z = z.cpu().numpy().ravel()
    n = z.size
    assert abs(z.mean()) < 5 / math.sqrt(n)
    assert abs(z.var() - 1) < 5 * math.sqrt(2 / n)
    assert abs(stats.kurtosis(z)) < 5 * math.sqrt(24 / n)
    assert abs(stats.skew(z)) < 5 * math.sqrt(6 / n)
    assert stats.kstest(z, "norm").pvalue > 1e-3
    # every slot of the group of four is itself standard normal (catches a mis-paired Box-Muller)
    for slot in range(4):
        assert stats.kstest(z[slot::4], "norm").pvalue > 1e-3


@parametrize_backends
def test_streams_are_uncorrelated(backend, device):
    keys = as_keys([99], device)
    n = N_DIST // 4

    def draw(step=0, stage=0, stream=0, k=keys):
        return philox_normal(k, n, step, stage, stream, torch.float64, backend=backend).cpu().numpy().ravel()

    base = draw()
    others = {
        "step": draw(step=1),
        "stage": draw(stage=1),
        "stream": draw(stream=1),
        "key": draw(k=keys + 1),
        "key_high_word": draw(k=keys + 2**32),
    }
    bound = 5 / math.sqrt(n)
    for name, other in others.items():
        assert abs(np.corrcoef(base, other)[0, 1]) < bound, name
        assert abs(np.corrcoef(base**2, other**2)[0, 1]) < bound * 3, name  # dependence beyond linear
    pairs = base.reshape(-1, 2)  # the two outputs of one Box-Muller draw
    assert abs(np.corrcoef(pairs[:, 0], pairs[:, 1])[0, 1]) < 5 / math.sqrt(pairs.shape[0])
    assert abs(np.corrcoef(base[:-1], base[1:])[0, 1]) < bound


# ---------------------------------------------------------------------------------------------
# Arguments.
# ---------------------------------------------------------------------------------------------
def test_bad_arguments_raise_naming_them():
    keys = as_keys([1, 2])
    with pytest.raises(TypeError, match="keys"):
        philox_normal(keys.float(), 4, 0, 0, 0)
    with pytest.raises(TypeError, match="keys"):
        philox_normal(keys.reshape(1, 2), 4, 0, 0, 0)
    with pytest.raises(TypeError, match="keys"):
        philox_normal([1, 2], 4, 0, 0, 0)
    with pytest.raises(ValueError, match="numel"):
        philox_normal(keys, -1, 0, 0, 0)
    with pytest.raises(TypeError, match="step"):
        philox_normal(keys, 4, 1.5, 0, 0)
    with pytest.raises(TypeError, match="dtype"):
        philox_normal(keys, 4, 0, 0, 0, dtype=torch.int32)
    with pytest.raises(ValueError, match="backend"):
        philox_normal(keys, 4, 0, 0, 0, backend="nope")
    with pytest.raises((RuntimeError, ValueError), match="triton"):  # unavailable, or not for meta tensors
        philox_normal(keys.to("meta"), 4, 0, 0, 0, backend="triton")


def test_cuda_backend_on_cpu_tensors_raises():
    with pytest.raises((RuntimeError, ValueError), match="cuda"):
        philox_normal(as_keys([1]), 4, 0, 0, 0, backend="cuda")


def test_counter_fields_wrap_modulo_2_32():
    keys = as_keys([5])
    for backend in [p.values[0] for p in BACKENDS if p.values[1] == "cpu" and not p.marks]:
        a = philox_normal(keys, 16, -1, 2**32 + 1, 0, torch.float64, backend=backend)
        b = philox_normal(keys, 16, 2**32 - 1, 1, 0, torch.float64, backend=backend)
        assert torch.equal(a, b), backend


@pytest.mark.skipif(not fastdiff.backends()["cpu"].available, reason="compiled extension not built")
class TestCompiledOp:
    def test_op_checks_its_arguments(self):
        op = torch.ops.fastdiff.philox_normal
        with pytest.raises(TypeError, match="keys"):
            op(torch.zeros(2), 4, 0, 0, 0, torch.float32)
        with pytest.raises(ValueError, match="keys"):
            op(torch.zeros(2, 2, dtype=torch.int64), 4, 0, 0, 0, torch.float32)
        with pytest.raises(ValueError, match="numel"):
            op(as_keys([1]), -4, 0, 0, 0, torch.float32)
        with pytest.raises(TypeError, match="dtype"):
            op(as_keys([1]), 4, 0, 0, 0, torch.int64)

    def test_opcheck(self):
        torch.library.opcheck(torch.ops.fastdiff.philox_normal, (as_keys([3, 2**63 + 1]), 9, 1, 2, 3, torch.float32))

    def test_compiles_without_graph_breaks(self):
        keys = as_keys([3, 4])

        def noise(k):
            return philox_normal(k, 10, 2, 0, 0, backend="cpu") * 2.0

        compiled = torch.compile(noise, backend="aot_eager", fullgraph=True)
        torch.testing.assert_close(compiled(keys), noise(keys), rtol=0, atol=0)
