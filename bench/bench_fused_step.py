"""Per-step time of the fused solver step against the eager reference and torch.compile of it.

Steps (`fastdiff.ops.solver_step`, a = 0.875), as the solvers call it:
  euler       a x + b D
  em          a x + b D + c z                                    (one counter draw)
  srk_stage   a x + b D_prev + c z1                               (one counter draw)
  srk_update  a x + b0 D~ + b1 D_prev + c1 z1 + c2 z2             (two counter draws)
  dpmpp_2m    a x + b0 D + b1 D_prev                              (no noise)
Backends: the fused ones of the device ("cpu"; "cuda" and "triton" on a GPU), "reference" (eager
PyTorch, `fastdiff.reference.solver_step`, its noise materialized by the PyTorch Philox reference)
and "compiled_reference" (torch.compile of that same function, Inductor, compiled once per case
before timing). Shapes: CPU float32 [4, N/4] for N = 1M, 4M, 16M; GPU latents 1x4x64x64 to
64x4x128x128 in float32 and bfloat16.

Bytes moved = x and every stage tensor read once + the output written once, the same count for
every backend (the fused kernels never store the noise; the reference's noise traffic is its
cost), so GB/s compare. extra_info holds median_ms, GB_per_s, fraction_of_copy_bw (of the
measured copy bandwidth) and speedup_vs_reference / speedup_vs_compiled_reference.

With --benchmark-disable (the CI smoke run) every case runs once on a tiny tensor and the fused
result is checked against the reference (same counter noise); the torch.compile cases are skipped.
"""

from __future__ import annotations

import pytest
import torch
from fused_backends import fused_backends

from fastdiff.noise import seeds_to_keys
from fastdiff.ops.philox import CounterNoise
from fastdiff.ops.solver_step import NoiseDraw, solver_step
from fastdiff.reference import solver_step as reference

A = 0.875
STEP_INDEX = 7
# name: (stage coefficients bs, noise coefficients cs)
STEPS = {
    "euler": ([0.125], []),
    "em": ([0.125], [0.3]),
    "srk_stage": ([0.05], [0.2]),
    "srk_update": ([0.6, -0.2], [0.15, 0.25]),
    "dpmpp_2m": ([0.7, -0.2], []),
}
CPU_SHAPES = {"1M": (4, 1 << 18), "4M": (4, 1 << 20), "16M": (4, 1 << 22)}
GPU_SHAPES = {"1x4x64x64": (1, 4, 64, 64), "8x4x64x64": (8, 4, 64, 64), "16x4x128x128": (16, 4, 128, 128),
              "64x4x128x128": (64, 4, 128, 128)}
SMOKE_SHAPES = {"cpu": (4, 1024), "cuda": (2, 4, 8, 8)}
BASELINES = ("reference", "compiled_reference")
TOLERANCES = {torch.float32: {"rtol": 1e-5, "atol": 1e-5}, torch.bfloat16: {}}


def _cases() -> list:
    cases = []
    grids = [("cpu", CPU_SHAPES, [torch.float32]), ("cuda", GPU_SHAPES, [torch.float32, torch.bfloat16])]
    for step in STEPS:
        for device, shapes, dtypes in grids:
            gpu_reason = None if device == "cpu" or torch.cuda.is_available() else "no CUDA device visible"
            for size in shapes:
                for dtype in dtypes:
                    for backend, reason in [(b, gpu_reason) for b in BASELINES] + fused_backends(device):
                        marks = [pytest.mark.skip(reason=f"{backend} on {device}: {reason}")] if reason else []
                        ident = f"{step}-{device}-{size}-{str(dtype).removeprefix('torch.')}-{backend}"
                        cases.append(pytest.param(step, device, size, dtype, backend, id=ident, marks=marks))
    return cases


@pytest.mark.parametrize("step, device, size, dtype, backend", _cases())
def test_fused_step(measure, benchmark, step, device, size, dtype, backend):
    if not benchmark.enabled and backend == "compiled_reference":
        pytest.skip("torch.compile cases are skipped with --benchmark-disable (compiling takes tens of seconds)")
    shape = (CPU_SHAPES if device == "cpu" else GPU_SHAPES)[size] if benchmark.enabled else SMOKE_SHAPES[device]
    bs, cs = STEPS[step]
    g = torch.Generator().manual_seed(0)
    x, *ks = (torch.randn(shape, generator=g).to(device, dtype) for _ in range(len(bs) + 1))
    keys = seeds_to_keys([11 + b for b in range(shape[0])], torch.device(device))
    source = CounterNoise.from_keys(keys)
    noise = [(c, NoiseDraw(source, STEP_INDEX, stage, None, None)) for stage, c in enumerate(cs)]
    draws = [(STEP_INDEX, stage, source.stream) for stage in range(len(cs))]

    if backend == "compiled_reference":
        torch._dynamo.reset()  # a fresh compile per case: no recompile limit, no dynamic shapes
        compiled = torch.compile(reference.solver_step, dynamic=False)

        def run():
            return compiled(x, ks, A, bs, keys, draws, cs)

        run()  # compile outside the timing
    else:

        def run():
            return solver_step(x, ks, A, bs, noise=noise, backend=backend)

    if not benchmark.enabled and backend not in BASELINES:
        wide = reference.solver_step(x.float(), [k.float() for k in ks], A, bs, keys, draws, cs)
        torch.testing.assert_close(run(), wide.to(dtype), **TOLERANCES[dtype])
    group = f"{step}-{size}-{str(dtype).removeprefix('torch.')}"
    baselines = BASELINES[: BASELINES.index(backend)] if backend in BASELINES else BASELINES
    bytes_moved = x.numel() * x.element_size() * (len(ks) + 2)
    measure(group, backend, run, bytes_moved, baseline=baselines, slow=device == "cpu" and backend == "reference",
            device=device)
