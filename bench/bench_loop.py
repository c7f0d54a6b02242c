"""Whole-loop overhead of `fastdiff.sample` with a trivial denoiser (D = x / 2), float32.

"eager": `fastdiff.sample(denoiser, x, grid, "srk", seed=0)` on a 20-step Karras grid (a list of
floats; 20 steps, the last one the denoising step to sigma = 0), so the loop runs 37 fused steps
(the first step's update, then a stage and an update per step) and 20 denoiser calls.
"cuda_graph" (GPU only): the same loop captured once as a CUDA graph, with the seeds as a device
int64 keys tensor, and timed per `graph.replay()`; the capture runs under
torch.cuda.set_sync_debug_mode("error"), so it proves the loop makes no host sync.

extra_info: median_ms of the loop, srk_update_ms (the fused SRK update step on the same latent,
auto backend), loop_over_20_srk_updates = loop / (20 x srk_update), srk_step_kernels_ms (one SRK
step's kernels called directly: stage step, denoiser, update step), host_overhead_ms_per_step =
(loop - kernels) / 20 with kernels = 18 SRK steps + the first step (denoiser + update) + the last
(denoiser): what the driver adds around the kernels, and for cuda_graph speedup_vs_eager.
With --benchmark-disable each case runs once on a 1x4x8x8 latent, and a replayed graph is
checked against the eager loop.
"""

from __future__ import annotations

import pytest
import torch

import fastdiff
from fastdiff.ops.philox import CounterNoise
from fastdiff.ops.solver_step import NoiseDraw, solver_step

GRID = fastdiff.get_sigmas("karras", 20, 0.01, 20.0).tolist()
SHAPES = {"cpu": {"1x4x64x64": (1, 4, 64, 64), "16x4x128x128": (16, 4, 128, 128)},
          "cuda": {"1x4x64x64": (1, 4, 64, 64), "64x4x128x128": (64, 4, 128, 128)}}
SMOKE_SHAPE = (1, 4, 8, 8)
NO_GPU = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device visible")


def denoiser(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return x * 0.5


def step_kernels(x: torch.Tensor, keys: torch.Tensor):
    """Thunks on x's shape (auto backend): the fused srk_update step (a x + b0 D~ + b1 D_prev + c1 z1 + c2 z2),
    and one whole SRK step's kernels without the driver (stage step, denoiser, update step)."""
    denoised, previous = x * 0.5, x * 0.25
    source = CounterNoise.from_keys(keys)
    z1, z2 = NoiseDraw(source, 3, 0, None, None), NoiseDraw(source, 3, 1, None, None)

    def update():
        return solver_step(x, [denoised, previous], 0.875, [0.6, -0.2], noise=[(0.15, z1), (0.25, z2)])

    def whole_step():
        stage = solver_step(x, [previous], 0.95, [0.05], noise=[(0.2, z1)])
        d = denoiser(stage, None)
        return solver_step(x, [d, previous], 0.875, [0.6, -0.2], noise=[(0.15, z1), (0.25, z2)])

    return update, whole_step


def _capture(x: torch.Tensor, keys: torch.Tensor) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
    """The loop on static x and keys as one CUDA graph (warmed up on a side stream, as tests/test_compile.py)."""

    def loop():
        return fastdiff.sample(denoiser, x, GRID, "srk", seed=keys)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        loop()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.cuda.graph(graph):
            out = loop()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return graph, out


CASES = [pytest.param("cpu", size, "eager", id=f"cpu-{size}-eager") for size in SHAPES["cpu"]] + [
    pytest.param("cuda", size, mode, id=f"cuda-{size}-{mode}", marks=NO_GPU)
    for size in SHAPES["cuda"]
    for mode in ("eager", "cuda_graph")
]


@pytest.mark.parametrize("device, size, mode", CASES)
def test_sampling_loop(measure, benchmark, time_median, device, size, mode):
    shape = SHAPES[device][size] if benchmark.enabled else SMOKE_SHAPE
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device) * GRID[0]
    keys = torch.arange(shape[0], dtype=torch.int64, device=device)
    if mode == "eager":

        def run():
            return fastdiff.sample(denoiser, x, GRID, "srk", seed=0)

    else:
        graph, out = _capture(x, keys)
        run = graph.replay
        if not benchmark.enabled:
            run()
            torch.testing.assert_close(out, fastdiff.sample(denoiser, x, GRID, "srk", seed=keys), rtol=1e-5, atol=1e-5)
    median = measure(f"loop-{device}-{size}", mode, run, None, baseline=None if mode == "eager" else "eager", device=device)
    if median is not None:
        update, whole_step = step_kernels(x, keys)
        info = benchmark.extra_info
        info["srk_update_ms"] = round(time_median(update, device) * 1e3, 4)
        info["loop_over_20_srk_updates"] = round(median * 1e3 / (20 * info["srk_update_ms"]), 2)
        info["srk_step_kernels_ms"] = round(time_median(whole_step, device) * 1e3, 4)
        denoise_ms = time_median(lambda: denoiser(x, None), device) * 1e3
        kernels_ms = 18 * info["srk_step_kernels_ms"] + info["srk_update_ms"] + 2 * denoise_ms
        info["host_overhead_ms_per_step"] = round((median * 1e3 - kernels_ms) / 20, 4)
