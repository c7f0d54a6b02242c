"""torch.distributed plumbing for training and sampling: rank, world size, sharding, and sampling that scales out.

Sharding is by contiguous slices of a global index range, so rank r of W holds samples [start_r, end_r) of the
global batch; with per-sample seeds the union over ranks is the single-process result whatever W is.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence

import torch
import torch.distributed as dist

from fastdiff.driver import sample
from fastdiff.dtypes import working_dtype
from fastdiff.noise import STREAM_INITIAL, seed_keys
from fastdiff.ops.philox import philox_normal
from fastdiff.validation import check_positive_int


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) when none is initialized."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env() -> torch.device:
    """Join the process group that `torchrun` describes in the environment (WORLD_SIZE > 1): NCCL with one GPU per
    local rank when CUDA is available, gloo on CPU otherwise. Returns the device this rank computes on."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return device


def shard(n: int, rank: int, world: int) -> tuple[int, int]:
    """[start, end) of rank `rank`'s contiguous share of n items (the first n % world ranks get one more)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def initial_noise(keys: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """Standard normal x_T `[len(keys), *shape]` on the keys' device, sample b a fixed function of keys[b] (the
    per-sample seeds as int64 keys, counter stream STREAM_INITIAL)."""
    z = philox_normal(keys, math.prod(shape), 0, 0, STREAM_INITIAL, dtype=working_dtype(dtype))
    return z.view(len(keys), *shape).to(dtype)


def sample_distributed(
    denoiser: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    shape: Sequence[int],
    n: int,
    sigmas: Sequence[float] | torch.Tensor,
    solver: str = "heun",
    *,
    seed: int = 0,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool | None = False,
    **solver_options,
) -> torch.Tensor | None:
    """n samples of shape `shape`, split over the ranks of the default process group (one process when none).

    Sample i has seed `sample_seeds(seed, n)[i]`: its initial noise sigma_max x_T and its solver noise depend on
    that seed only, so the result does not depend on the number of ranks. Each rank runs `fastdiff.sample` on its
    contiguous share; rank 0 returns all n samples in order, the other ranks return None.
    """
    n = check_positive_int(n, "n")
    shape = tuple(shape)
    if not shape or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape):
        raise ValueError(f"shape must be a non-empty sequence of positive ints (one sample's shape), got {shape!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    device = torch.device(device)
    rank, world = rank_and_world()
    start, end = shard(n, rank, world)
    keys = seed_keys(seed, n, device)[start:end]
    grid = sigmas.tolist() if isinstance(sigmas, torch.Tensor) else list(sigmas)
    if end > start:
        x = initial_noise(keys, shape, dtype) * grid[0]
        with torch.no_grad():
            local = sample(denoiser, x, grid, solver, seed=keys, progress=progress and rank == 0, **solver_options)
    else:
        local = torch.empty((0, *shape), device=device, dtype=dtype)
    if world == 1:
        return local
    padded = torch.zeros((n // world + 1, *shape), device=device, dtype=dtype)
    padded[: end - start] = local
    gathered = [torch.empty_like(padded) for _ in range(world)] if rank == 0 else None
    dist.gather(padded, gathered, dst=0)
    if rank != 0:
        return None
    return torch.cat([g[: shard(n, r, world)[1] - shard(n, r, world)[0]] for r, g in enumerate(gathered)])
