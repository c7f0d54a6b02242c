"""philox_normal, float32: the compiled CPU kernel against the PyTorch reference
(`fastdiff.reference.philox`, the same oracle the tests use), at 1M and 4M elements.

`make bench` records the speed-up in extra_info["speedup_vs_reference"]. With --benchmark-disable
(the CI smoke run) each case runs once on 4096 elements and the kernel is checked against the
reference instead.
"""

from __future__ import annotations

import pytest
import torch

import fastdiff
from fastdiff.ops.philox import philox_normal
from fastdiff.reference import philox as reference

SIZES = {"1M": 1 << 20, "4M": 1 << 22}
SMOKE_NUMEL = 4096
BATCH = 4
KEYS = torch.tensor([11, -3, 2**40 + 7, 2**62 + 5], dtype=torch.int64)
CPU = fastdiff.backends()["cpu"]


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize(
    "backend",
    ["reference", pytest.param("cpu", marks=pytest.mark.skipif(not CPU.available, reason=f"cpu backend: {CPU.reason}"))],
)
def test_philox_normal(measure, benchmark, backend, size):
    numel = (SIZES[size] if benchmark.enabled else SMOKE_NUMEL) // BATCH

    def ref():
        return reference.philox_normal(KEYS, numel, 3, 1, 0, torch.float32)

    def run():
        return philox_normal(KEYS, numel, 3, 1, 0, torch.float32, backend=backend)

    if not benchmark.enabled:
        torch.testing.assert_close(run(), ref(), rtol=0, atol=2e-6)
    baseline = None if backend == "reference" else "reference"
    measure(f"philox_normal-{size}", backend, run, bytes_moved=4 * BATCH * numel, baseline=baseline, baseline_fn=ref,
            slow=backend == "reference")
