"""Same seed, same backend: bitwise the same result at any thread count. The CPU kernels split work with OpenMP
above 2^15 elements; the per-sample sums of the trace and Itô steps must not depend on the split. The rest of the
suite runs single-threaded (tests/conftest.py), so this file is where several threads are exercised."""

from __future__ import annotations

import pytest
import torch
from backend_params import backend_params

import fastdiff
from fastdiff.ops.ito_step import ito_step
from fastdiff.ops.philox import CounterNoise, philox_normal
from fastdiff.ops.solver_step import NoiseDraw, solver_step
from fastdiff.ops.trace_step import trace_step

THREADS = [1, 2, 3, 8]  # more threads than cores included
BACKENDS = [p for p in backend_params() if p.values in (("reference", "cpu"), ("cpu", "cpu"))]
SHAPE = (3, 70_001)  # several OpenMP chunks per sample, odd size


@pytest.fixture
def thread_counts():
    before = torch.get_num_threads()
    yield THREADS
    torch.set_num_threads(before)


def operands(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=g)
    ks = [torch.randn(SHAPE, generator=g) for _ in range(2)]
    return x, ks, CounterNoise([11, 2**63 + 5, 7], torch.device("cpu"))


def same_at_every_thread_count(run, counts):
    results = []
    for n in counts:
        torch.set_num_threads(n)
        out = run()
        results.append(out if isinstance(out, tuple) else (out,))
    for n, result in zip(counts[1:], results[1:], strict=True):
        for a, b in zip(results[0], result, strict=True):
            assert torch.equal(a, b), f"{n} threads differ from 1 thread"


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
def test_philox_normal(backend, device, dtype, thread_counts):
    keys = torch.tensor([3, -1, 2**40], dtype=torch.int64)
    same_at_every_thread_count(lambda: philox_normal(keys, 200_003, 4, 1, 0, dtype, backend), thread_counts)


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_solver_step_with_noise(backend, device, thread_counts):
    x, ks, noise = operands()
    draws = [(0.3, NoiseDraw(noise, 5, 0, 1.0, 0.5)), (-0.2, NoiseDraw(noise, 5, 1, 1.0, 0.5))]
    same_at_every_thread_count(lambda: solver_step(x, ks, 0.9, [0.1, -0.4], draws, backend=backend), thread_counts)


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
def test_trace_step(backend, device, thread_counts):
    x, ks, noise = operands(1)
    u = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(2))
    total = torch.randn(SHAPE[0], dtype=torch.float64)
    same_at_every_thread_count(
        lambda: trace_step(x, ks, 0.8, [0.1, 0.2], u, noise.keys, 3, 1, "gaussian", total, 0.5, -1.25, backend=backend),
        thread_counts,
    )


@pytest.mark.parametrize(("backend", "device"), BACKENDS)
@pytest.mark.parametrize("mode", ["or", "and"])
def test_ito_step(backend, device, mode, thread_counts):
    x, denoised, noise = operands(3)
    ell = torch.randn(SHAPE[0], 2, generator=torch.Generator().manual_seed(4))
    draw = NoiseDraw(noise, 2, 0, 1.3, 0.9)
    same_at_every_thread_count(lambda: ito_step(x, denoised, 1.3, 0.9, ell, draw, mode, backend=backend), thread_counts)


@pytest.mark.parametrize("solver", ["srk", "dpmpp_2m_sde", "euler_ancestral"])
def test_whole_sampling_run(solver, thread_counts):
    x = torch.randn(SHAPE) * 10
    sigmas = fastdiff.get_sigmas("logsnr", 4, 0.01, 10.0)
    shrink = lambda x, s: x / (1 + s[:, None] ** 2)  # noqa: E731
    same_at_every_thread_count(lambda: fastdiff.sample(shrink, x, sigmas, solver, seed=7), thread_counts)
