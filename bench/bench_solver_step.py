"""solver_step, float32: the compiled CPU kernel against the PyTorch reference
(`fastdiff.reference.solver_step`, the same oracle the tests use), at 1M and 4M elements, for a
one-stage step (Euler: a x + b D) and a three-stage one (a multistep or SRK update).

`make bench` records the speed-up in extra_info["speedup_vs_reference"] and the GB/s moved (every
operand read once, the output written once). With --benchmark-disable (the CI smoke run) each case
runs once on 4096 elements and the kernel is checked against the reference instead.
"""

from __future__ import annotations

import pytest
import torch

import fastdiff
from fastdiff.ops.solver_step import solver_step
from fastdiff.reference import solver_step as reference

SIZES = {"1M": 1 << 20, "4M": 1 << 22}
SMOKE_NUMEL = 4096
BATCH = 4
COEFFICIENTS = {1: [0.25], 3: [1.5, -0.75, 0.125]}
CPU = fastdiff.backends()["cpu"]


@pytest.mark.parametrize("stages", [1, 3])
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize(
    "backend",
    ["reference", pytest.param("cpu", marks=pytest.mark.skipif(not CPU.available, reason=f"cpu backend: {CPU.reason}"))],
)
def test_solver_step(measure, benchmark, backend, size, stages):
    numel = SIZES[size] if benchmark.enabled else SMOKE_NUMEL
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, numel // BATCH, generator=g)
    ks = [torch.randn(BATCH, numel // BATCH, generator=g) for _ in range(stages)]
    bs = COEFFICIENTS[stages]

    def ref():
        return reference.solver_step(x, ks, 0.875, bs)

    def run():
        return solver_step(x, ks, 0.875, bs, backend=backend)

    if not benchmark.enabled:
        torch.testing.assert_close(run(), ref())
    baseline = None if backend == "reference" else "reference"
    measure(f"solver_step-{stages}stage-{size}", backend, run, bytes_moved=4 * numel * (stages + 2), baseline=baseline,
            baseline_fn=ref)
