"""The update of the linear multistep rules on eps = (x - D) / sigma (ipndm, ipndm_v, deis, lms): each computes its
coefficients C_j, this writes x' = x + sum_j C_j eps_j as one fused step over the stored (x_j, D_j) of its points, so
no eps tensor is ever materialized."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastdiff.ops.solver_step import solver_step


def eps_update(x: torch.Tensor, points: Sequence[tuple], coefficients: Sequence[float], backend: str) -> torch.Tensor:
    """x' = x + sum_j C_j (x_j - D_j) / sigma_j over `points` = [(x_j, D_j, sigma_j)], newest first, with x_0 = x."""
    weights = [c / s for c, (_, _, s) in zip(coefficients, points, strict=True)]
    ks, bs = [points[0][1]], [-weights[0]]
    for w, (x_j, d_j, _) in zip(weights[1:], points[1:], strict=True):
        ks += [x_j, d_j]
        bs += [w, -w]
    return solver_step(x, ks, 1.0 + weights[0], bs, backend=backend)
