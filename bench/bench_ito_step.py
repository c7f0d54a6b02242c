"""ito_step, float32: the compiled CPU kernel against the PyTorch reference (`fastdiff.reference.ito_step`, the
oracle the tests use), OR and AND with two models, at 1M and 4M elements.

`make bench` records the speed-up in extra_info["speedup_vs_reference"] and the GB/s moved: OR reads x and the
two denoised tensors once and writes x' (one pass); AND reads them twice (reduction pass, then move pass). With
--benchmark-disable (the CI smoke run) each case runs once on 4096 elements and is checked against the reference.
"""

from __future__ import annotations

import pytest
import torch

import fastdiff
from fastdiff.ops.ito_step import ito_step
from fastdiff.ops.philox import CounterNoise
from fastdiff.ops.solver_step import NoiseDraw

SIZES = {"1M": 1 << 20, "4M": 1 << 22}
SMOKE_NUMEL = 4096
BATCH = 4
MODELS = 2
CPU = fastdiff.backends()["cpu"]


@pytest.mark.parametrize("mode", ["or", "and"])
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize(
    "backend",
    ["reference", pytest.param("cpu", marks=pytest.mark.skipif(not CPU.available, reason=f"cpu backend: {CPU.reason}"))],
)
def test_ito_step(measure, benchmark, backend, size, mode):
    numel = SIZES[size] if benchmark.enabled else SMOKE_NUMEL
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, numel // BATCH, generator=g)
    denoised = [x + torch.randn(BATCH, numel // BATCH, generator=g) for _ in range(MODELS)]
    ell = torch.zeros(BATCH, MODELS)
    draw = NoiseDraw(CounterNoise(list(range(BATCH)), x.device), 0, 0, 1.0, 0.9)

    def ref():
        return ito_step(x, denoised, 1.0, 0.9, ell, draw, mode, backend="reference")

    def run():
        return ito_step(x, denoised, 1.0, 0.9, ell, draw, mode, backend=backend)

    if not benchmark.enabled:
        for got, expected in zip(run(), ref(), strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    passes = 1 if mode == "or" else 2
    baseline = None if backend == "reference" else "reference"
    measure(f"ito_step-{mode}-{size}", backend, run, bytes_moved=4 * numel * ((MODELS + 1) * passes + 1), baseline=baseline,
            baseline_fn=ref, slow=backend == "reference")
