"""Flow-matching time <-> fastdiff's noise level, exactly (a leaf: used by the grids and the model wrappers).

A rectified-flow model sees x_t = (1 - t) x0 + t eps at time t in [0, 1]. In fastdiff's variance-exploding form
x = x0 + sigma eps that is x = x_t / (1 - t) with sigma = t / (1 - t), and back t = sigma / (1 + sigma): the VP case
with alpha = 1 - t. t = 1 (pure noise, the first point of every flow pipeline's grid) is sigma = inf, kept as IEEE
infinity, never offset; at sigma = inf the sampler's state is the unit noise x / sigma = x_t itself
(docs/ALGORITHMS.md section 14).
"""

from __future__ import annotations

import math

import torch


def flow_t_to_sigma(t: float | torch.Tensor) -> float | torch.Tensor:
    """sigma = t / (1 - t); t = 1 gives inf, t = 0 gives 0."""
    if isinstance(t, torch.Tensor):
        return torch.where(t == 1, torch.full_like(t, math.inf), t / (1 - t))
    return math.inf if t == 1 else t / (1 - t)


def sigma_to_flow_t(sigma: float | torch.Tensor) -> float | torch.Tensor:
    """t = sigma / (1 + sigma); sigma = inf gives 1."""
    if isinstance(sigma, torch.Tensor):
        return torch.where(torch.isinf(sigma), torch.ones_like(sigma), sigma / (1 + sigma))
    return 1.0 if math.isinf(sigma) else sigma / (1 + sigma)
