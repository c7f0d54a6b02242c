"""Which noise-level group is hardest: the base model's per-group loss above the irreducible loss.

The DSM loss at sigma, E lambda ||D(x0 + sigma n, sigma) - x0||^2 with EDM's weighting, splits into
    E lambda ||D - D*||^2 (reducible)  +  E lambda ||D* - x0||^2 (irreducible),
D* = E[x0 | x] the optimal denoiser. lambda = 1 / c_out^2 makes the reducible part the network's own squared
error in its output units (||F - F*||^2), comparable across noise levels, while the irreducible part grows
with sigma and says nothing about what capacity can fix. So difficulty = per-group loss minus the loss of a
reference optimum D* on the same (x0, sigma, n): `GaussianMixture.denoiser` for the toy, and
`EmpiricalDenoiser(train set)` (the exact optimum of the training objective on a finite set) for images.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from fastdiff.train.tdc.noise_levels import truncated_lognormal, weighted_error


class EmpiricalDenoiser:
    """D*(x, sigma) = sum_i softmax_i(-||x - y_i||^2 / (2 sigma^2)) y_i for the data set y [N, ...]: the optimal
    denoiser of the empirical law (1/N) sum_i delta_{y_i}, evaluated in float64 in chunks of `chunk` queries."""

    def __init__(self, data: torch.Tensor, chunk: int = 256):
        if not isinstance(data, torch.Tensor) or data.ndim < 2 or data.shape[0] < 1:
            raise ValueError(f"data must be a tensor [N, ...] with N >= 1, got {getattr(data, 'shape', type(data).__name__)}")
        self.data = data.detach().double().flatten(1)
        self.shape = data.shape[1:]
        self.sq = self.data.pow(2).sum(dim=1)
        self.chunk = chunk

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        flat = x.detach().double().flatten(1).to(self.data.device)
        s2 = torch.as_tensor(sigma, dtype=torch.float64).expand(x.shape[0]).to(self.data.device) ** 2
        out = []
        for start in range(0, flat.shape[0], self.chunk):
            q, v = flat[start:start + self.chunk], s2[start:start + self.chunk, None]
            dist = q.pow(2).sum(dim=1, keepdim=True) - 2.0 * q @ self.data.T + self.sq[None, :]
            out.append(torch.softmax(-dist / (2.0 * v), dim=1) @ self.data)
        return torch.cat(out).view(x.shape).to(x.device, x.dtype)


@dataclass(frozen=True)
class GroupLoss:
    """Per group: the mean weighted loss of the model, of the reference optimum, and their difference."""

    loss: list[float]
    irreducible: list[float]

    @property
    def excess(self) -> list[float]:
        return [a - b for a, b in zip(self.loss, self.irreducible, strict=True)]

    @property
    def hardest(self) -> int:
        """Index of the group with the largest excess loss (ties: the lower index)."""
        excess = self.excess
        return max(range(len(excess)), key=lambda g: (excess[g], -g))


@torch.no_grad()
def group_losses(
    denoiser: Callable, x0: torch.Tensor, edges: Sequence[float], *, reference: Callable | None = None, n_draws: int = 4,
    P_mean: float = -1.2, P_std: float = 1.2, sigma_data: float = 0.5, seed: int = 0,
) -> GroupLoss:
    """Per-group DSM loss of `denoiser` on x0 (each sample noised `n_draws` times with sigma from the group's restricted
    log-normal), and that of `reference` on the same noisy points (zeros without a reference). Seeded, deterministic."""
    loss, irreducible = [], []
    for g in range(len(edges) - 1):
        gen = torch.Generator().manual_seed(seed * 1000 + g)
        total, total_ref, count = 0.0, 0.0, 0
        for _ in range(n_draws):
            sigma = truncated_lognormal(x0.shape[0], edges[g], edges[g + 1], P_mean=P_mean, P_std=P_std, generator=gen)
            noise = torch.randn(x0.shape, generator=gen)
            sigma, noise = sigma.to(x0.device), noise.to(x0.device, x0.dtype)
            x = x0 + sigma.view((-1,) + (1,) * (x0.ndim - 1)).to(x0.dtype) * noise
            total += weighted_error(denoiser(x, sigma), x0, sigma, sigma_data).sum().item()
            if reference is not None:
                total_ref += weighted_error(reference(x, sigma), x0, sigma, sigma_data).sum().item()
            count += x0.shape[0]
        loss.append(total / count)
        irreducible.append(total_ref / count)
    return GroupLoss(loss, irreducible)
