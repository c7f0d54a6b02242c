"""Exact targets for LD3 experiments: Gaussian mixtures whose probability-flow ODE map is known in closed form
(`fastdiff.toy.GaussianMixture.ode_solution`), so learned and hand-designed grids are measured against the truth."""

from __future__ import annotations

import torch

from fastdiff.toy import GaussianMixture


def trimodal_1d() -> GaussianMixture:
    """The default target: three overlapping unequal modes in 1-D (exact map: the quantile map)."""
    return GaussianMixture([[-1.5], [0.3], [2.0]], stds=[0.4, 0.3, 0.5], weights=[0.35, 0.25, 0.4])


def separated_1d() -> GaussianMixture:
    """Three well-separated modes in 1-D, one narrow: the exact map is nearly a step between modes, so the RMSE is
    dominated by the rare noises that land near a boundary."""
    return GaussianMixture([[-2.0], [0.5], [2.5]], stds=[0.3, 0.15, 0.6], weights=[0.3, 0.2, 0.5])


def anisotropic_gaussian(dim: int = 8, seed: int = 0) -> GaussianMixture:
    """N(mu, U diag(lambda) U^T) with eigenvalues log-spaced from 1e-3 to 4 and a random rotation (exact map per
    eigen-direction)."""
    gen = torch.Generator().manual_seed(seed)
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=gen, dtype=torch.float64))
    eig = torch.logspace(-3, torch.log10(torch.tensor(4.0)).item(), dim, dtype=torch.float64)
    cov = rotation @ torch.diag(eig) @ rotation.T
    return GaussianMixture.gaussian(torch.randn(dim, generator=gen, dtype=torch.float64), 0.5 * (cov + cov.T))


TARGETS = {"mixture_1d": trimodal_1d, "separated_1d": separated_1d, "gaussian_8d": anisotropic_gaussian}
