"""FLOPs per sample, counted by `torch.utils.flop_counter.FlopCounterMode` on the real architectures.

FlopCounterMode counts the multiply-adds of matrix products and convolutions as 2 FLOPs each (a Linear
layer in -> out costs 2 in out per sample); elementwise work (activations, norms, solver arithmetic) is not
counted. Per-sample numbers are the count for a batch divided by its size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.flop_counter import FlopCounterMode

import fastdiff
from fastdiff.train.networks import make_denoiser


def denoiser_flops(denoiser: Callable, shape: Sequence[int], sigma: float = 1.0, batch: int = 2) -> float:
    """FLOPs of one evaluation D(x, sigma) per sample, for samples of shape `shape` (without the batch dim)."""
    param = next(denoiser.parameters()) if isinstance(denoiser, torch.nn.Module) else None
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    x = torch.zeros(batch, *shape, device=device, dtype=dtype)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        denoiser(x, torch.full((batch,), sigma, device=device, dtype=dtype))
    return counter.get_total_flops() / batch


def config_flops(config: dict, shape: Sequence[int]) -> float:
    """FLOPs per sample of one evaluation of `make_denoiser(**config)`, built and run on the meta device."""
    with torch.device("meta"):
        denoiser = make_denoiser(**config)
        x = torch.zeros(1, *shape)
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            denoiser.net(x, torch.zeros(1))
    return float(counter.get_total_flops())


def sampling_flops(
    denoiser: Callable, shape: Sequence[int], sigmas: torch.Tensor | Sequence[float], solver: str = "heun",
    batch: int = 2, **sample_options,
) -> float:
    """FLOPs per sample of a whole `fastdiff.sample` run (every network evaluation of every step, with whatever
    routing the denoiser does), counted while the run executes."""
    param = next(denoiser.parameters()) if isinstance(denoiser, torch.nn.Module) else None
    device = param.device if param is not None else torch.device("cpu")
    grid = torch.as_tensor(sigmas, dtype=torch.float64)
    x = torch.randn(batch, *shape, generator=torch.Generator().manual_seed(0)).to(device) * float(grid[0])
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fastdiff.sample(denoiser, x, sigmas, solver, seed=0, backend="reference", **sample_options)
    return counter.get_total_flops() / batch
