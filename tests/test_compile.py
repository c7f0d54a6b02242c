"""A whole sampling loop under torch.compile(fullgraph=True), and captured as one CUDA graph.

The step rules are host arithmetic around `fastdiff.ops.solver_step`, whose fused kernels are
torch.library ops with fake kernels, so Dynamo traces `fastdiff.sample` end to end: one graph,
no breaks, the same sample as eager. On a GPU the fixed-NFE loop is captured once and replayed
with new noise and seeds copied into its static inputs, with no host sync inside.
"""

from __future__ import annotations

import pytest
import torch
from backend_params import backend_device_pairs

import fastdiff
from fastdiff.solvers import SOLVERS
from fastdiff.toy import GaussianMixture

MIXTURE = GaussianMixture.ring(4, radius=2.0, std=0.5)
GRID = fastdiff.get_sigmas("karras", 6, 0.01, 20.0).tolist()


def denoiser(x, sigma):
    return MIXTURE.denoiser(x, sigma).to(x.dtype)


@pytest.mark.parametrize("name", sorted(SOLVERS))
def test_sampling_loop_compiles_to_one_graph(name):
    def run(x):
        return fastdiff.sample(denoiser, x, GRID, name, seed=11)

    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0)) * GRID[0]
    torch._dynamo.reset()
    compiled = torch.compile(run, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), run(x), rtol=1e-6, atol=1e-6)


def test_sampling_loop_compiles_with_inductor():
    """The default compiler too: Inductor fuses the toy model's arithmetic around the custom ops."""

    def run(x, keys):
        return fastdiff.sample(denoiser, x, GRID, "srk", seed=keys)

    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(1)) * GRID[0]
    keys = torch.tensor([3, -4, 5, 6, 2**40, 7])
    torch._dynamo.reset()
    compiled = torch.compile(run, fullgraph=True)
    torch.testing.assert_close(compiled(x, keys), run(x, keys), rtol=1e-5, atol=1e-5)


def test_device_key_tensor_is_the_seed_list():
    x = torch.randn(3, 2) * GRID[0]
    seeds = [1, 2**63 + 5, 9]
    keys = fastdiff.noise.seeds_to_keys(seeds, x.device)
    by_keys = fastdiff.sample(denoiser, x, GRID, "srk", seed=keys)
    assert torch.equal(by_keys, fastdiff.sample(denoiser, x, GRID, "srk", seed=seeds))


def test_tensor_grid_is_refused_while_compiling():
    def run(x):
        return fastdiff.sample(denoiser, x, torch.tensor(GRID), "euler")

    torch._dynamo.reset()
    with pytest.raises(Exception, match="list of floats"):
        torch.compile(run, fullgraph=True, backend="aot_eager")(torch.randn(2, 2))


CUDA_BACKENDS = [b for b, device in backend_device_pairs() if device == "cuda" and b != "reference"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
@pytest.mark.parametrize("backend", CUDA_BACKENDS)
@pytest.mark.parametrize("name", ["srk", "dpmpp_2m_sde", "euler_ancestral", "heun"])
def test_fixed_nfe_loop_replays_as_one_cuda_graph(name, backend):
    status = fastdiff.backends()[backend]
    if not status.available:
        pytest.skip(f"backend {backend!r} unavailable: {status.reason}")
    device = torch.device("cuda")
    grid = fastdiff.get_sigmas("karras", 20, 0.01, 20.0).tolist()
    weights = torch.randn(2, 2, device=device) * 0.1

    def model(x, sigma):
        return torch.tanh(x @ weights) / (1.0 + sigma[:, None] ** 2)

    static_x = torch.randn(64, 2, device=device) * grid[0]
    static_keys = torch.arange(64, device=device, dtype=torch.int64)

    def run():
        return fastdiff.sample(model, static_x, grid, name, seed=static_keys, backend=backend)

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run()  # warm-up: lazy initialisation happens outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = run()
    for trial in range(2):
        static_x.copy_(torch.randn(64, 2, device=device) * grid[0])
        static_keys.copy_(torch.randint(-(2**62), 2**62, (64,), device=device))
        graph.replay()
        eager = fastdiff.sample(model, static_x.clone(), grid, name, seed=static_keys.clone(), backend=backend)
        torch.testing.assert_close(static_out, eager, rtol=1e-5, atol=1e-5, msg=f"replay {trial}")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_loop_makes_no_host_sync_inside_steps():
    """With the grid as host floats and the seeds as a device tensor, only the finiteness check of x syncs."""
    device = torch.device("cuda")
    grid = fastdiff.get_sigmas("karras", 20, 0.01, 20.0).tolist()
    x = torch.randn(64, 2, device=device) * grid[0]
    keys = torch.arange(64, device=device)
    model = lambda x, sigma: x / (1.0 + sigma[:, None] ** 2)  # noqa: E731
    fastdiff.sample(model, x, grid, "srk", seed=keys)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        with torch.cuda.graph(torch.cuda.CUDAGraph()):  # capture skips the one validation sync
            fastdiff.sample(model, x, grid, "srk", seed=keys)
    finally:
        torch.cuda.set_sync_debug_mode("default")
