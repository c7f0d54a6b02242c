"""Distances between sample sets, for comparing a sampler's output with exact samples."""

from __future__ import annotations

import torch


def _check_pair(x: torch.Tensor, y: torch.Tensor) -> None:
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, torch.Tensor) or t.ndim != 2 or not t.dtype.is_floating_point:
            raise ValueError(f"{name} must be a floating [N, d] tensor of samples")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """Energy distance 2 E|X - Y| - E|X - X'| - E|Y - Y'| (Szekely & Rizzo), V-statistic, float64.

    Zero iff the two laws agree; a metric on distributions with finite first moment."""
    _check_pair(x, y)
    x, y = x.double(), y.double()
    xy = torch.cdist(x, y).mean()
    xx = torch.cdist(x, x).mean()
    yy = torch.cdist(y, y).mean()
    return float(2 * xy - xx - yy)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, n_projections: int = 256, seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance: sqrt of the mean over random unit directions of W2^2 between
    the 1-D projections (sorted-sample matching; x and y must have the same number of samples)."""
    _check_pair(x, y)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y need the same number of samples, got {x.shape[0]} and {y.shape[0]}")
    gen = torch.Generator().manual_seed(seed)
    dirs = torch.randn(x.shape[1], n_projections, generator=gen, dtype=torch.float64)
    dirs = (dirs / dirs.norm(dim=0, keepdim=True)).to(x.device)
    px, _ = (x.double() @ dirs).sort(dim=0)
    py, _ = (y.double() @ dirs).sort(dim=0)
    return float(((px - py) ** 2).mean().sqrt())
