"""Per-evaluation time of the fused trace step against the eager reference.

One call of `fastdiff.ops.trace_step` as `fastdiff.density.ode_log_likelihood` makes it at a Heun
corrector: x' = a x + b0 D + b1 x~ + b2 D~ and total += c + w mean_p <u_p, v_p>, with P = 1 or 4
probes (Rademacher and Gaussian) regenerated in the kernel. Backends: the fused ones of the device
("cpu"; "cuda" and "triton" on a GPU) and "reference" (eager PyTorch, `fastdiff.reference.trace_step`,
which materializes the probes with the PyTorch Philox). Shapes: CPU float32 [4, N/4] for N = 256K
and 1M; GPU latents 8x4x64x64 and 64x4x64x64 in float32 and bfloat16.

Bytes moved = x, the three stage tensors and the P vector-Jacobian products read once + x' written
once, the same count for every backend (the fused kernels never store the probes). extra_info holds
median_ms, GB_per_s, fraction_of_copy_bw and speedup_vs_reference (measured in the same run).

With --benchmark-disable (the CI smoke run) every case runs once on a tiny tensor and the fused
result is checked against the reference.
"""

from __future__ import annotations

import pytest
import torch
from fused_backends import fused_backends

from fastdiff.noise import seeds_to_keys
from fastdiff.ops.trace_step import trace_step

A, BS, C, W = 1.01, [-0.005, 0.006, -0.006], 0.3, -0.006
CPU_SHAPES = {"256K": (4, 1 << 16), "1M": (4, 1 << 18)}
GPU_SHAPES = {"8x4x64x64": (8, 4, 64, 64), "64x4x64x64": (64, 4, 64, 64)}
SMOKE_SHAPES = {"cpu": (3, 1000), "cuda": (2, 4, 8, 8)}
TOLERANCES = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.bfloat16: {}}


def _cases() -> list:
    cases = []
    grids = [("cpu", CPU_SHAPES, [torch.float32]), ("cuda", GPU_SHAPES, [torch.float32, torch.bfloat16])]
    for probe in ("rademacher", "gaussian"):
        for n_probes in (1, 4):
            for device, shapes, dtypes in grids:
                gpu_reason = None if device == "cpu" or torch.cuda.is_available() else "no CUDA device visible"
                for size in shapes:
                    for dtype in dtypes:
                        for backend, reason in [("reference", gpu_reason), *fused_backends(device)]:
                            marks = [pytest.mark.skip(reason=f"{backend} on {device}: {reason}")] if reason else []
                            ident = f"{probe}-P{n_probes}-{device}-{size}-{str(dtype).removeprefix('torch.')}-{backend}"
                            cases.append(pytest.param(probe, n_probes, device, size, dtype, backend, id=ident, marks=marks))
    return cases


@pytest.mark.parametrize("probe, n_probes, device, size, dtype, backend", _cases())
def test_trace_step(measure, benchmark, probe, n_probes, device, size, dtype, backend):
    shape = (CPU_SHAPES if device == "cpu" else GPU_SHAPES)[size] if benchmark.enabled else SMOKE_SHAPES[device]
    g = torch.Generator().manual_seed(0)
    x, *ks = (torch.randn(shape, generator=g).to(device, dtype) for _ in range(4))
    u = torch.randn((n_probes, *shape), generator=g).to(device, dtype)
    keys = seeds_to_keys([11 + b for b in range(shape[0])], torch.device(device))
    total = torch.zeros(shape[0], dtype=torch.float64, device=device)

    def run(which: str = backend):
        return trace_step(x, ks, A, BS, u, keys, 5, 1, probe, total, C, W, backend=which)

    if not benchmark.enabled and backend != "reference":
        fused, ref = run(), run("reference")
        torch.testing.assert_close(fused[0], ref[0], **TOLERANCES[dtype])
        torch.testing.assert_close(fused[1], ref[1], rtol=1e-4, atol=1e-4)
    group = f"{probe}-P{n_probes}-{size}-{str(dtype).removeprefix('torch.')}"
    bytes_moved = x.numel() * x.element_size() * (len(ks) + 2 + n_probes)
    measure(group, backend, run, bytes_moved, baseline=None if backend == "reference" else "reference",
            slow=device == "cpu" and backend == "reference", device=device)
