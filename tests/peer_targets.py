"""Targets and starts shared by the tests that compare a fastdiff solver with a peer's own code (ComfyUI, diffusers,
k-diffusion): an 8-D Gaussian with a random covariance and a 2-D ring mixture, both exact (`fastdiff.toy`)."""

from __future__ import annotations

import torch

from fastdiff.toy import GaussianMixture


def gaussian_8d(seed: int) -> GaussianMixture:
    """N(m, A A^T / 8 + 0.01 I) with m and A standard normal from `seed`."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(8, 8, generator=g, dtype=torch.float64)
    return GaussianMixture.gaussian(
        torch.randn(8, generator=g, dtype=torch.float64), a @ a.T / 8 + 0.01 * torch.eye(8, dtype=torch.float64)
    )


def targets(seed: int) -> dict[str, GaussianMixture]:
    return {"gaussian_8d": gaussian_8d(seed), "ring_2d": GaussianMixture.ring(k=5, radius=3.0, std=0.4)}


def start(gm: GaussianMixture, sigma_max: float, seed: int) -> torch.Tensor:
    """32 starts sigma_max * N(0, I) in float64."""
    return sigma_max * torch.randn(32, gm.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
