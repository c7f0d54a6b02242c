"""The generic solver step `x' = a x + sum_i b_i k_i + sum_j c_j z_j`, dispatched by backend.

Every solver in `fastdiff.solvers` expresses its update through this one primitive, with the
scalars computed on the host in float64. Noise enters as `NoiseDraw` requests rather than
tensors so that a fused backend can generate the Gaussians in registers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from fastdiff.backends import resolve_backend
from fastdiff.reference import solver_step as reference

SUPPORTED_BACKENDS = ("reference",)


@dataclass(frozen=True)
class NoiseDraw:
    """Request for the standard normals of (step, stage) from a noise source."""

    source: object  # fastdiff.noise.NoiseSource
    step: int
    stage: int
    sigma: torch.Tensor
    sigma_next: torch.Tensor

    def materialize(self, like: torch.Tensor) -> torch.Tensor:
        return self.source.draw(like, self.step, self.stage, self.sigma, self.sigma_next)


def _check_operands(x: torch.Tensor, ks: Sequence[torch.Tensor], bs: Sequence[float]) -> None:
    if len(ks) != len(bs):
        raise ValueError(f"solver_step needs one coefficient per stage tensor: got {len(ks)} tensors and {len(bs)} coefficients")
    for i, k in enumerate(ks):
        if k.shape != x.shape:
            raise ValueError(f"stage tensor ks[{i}] has shape {tuple(k.shape)}, expected x's shape {tuple(x.shape)}")
        if k.device != x.device:
            raise ValueError(f"stage tensor ks[{i}] is on {k.device}, expected x's device {x.device}")


def solver_step(
    x: torch.Tensor,
    ks: Sequence[torch.Tensor],
    a: float,
    bs: Sequence[float],
    noise: Sequence[tuple[float, NoiseDraw]] = (),
    backend: str = "auto",
) -> torch.Tensor:
    """`a x + sum_i b_i ks[i] + sum_j c_j z_j`, with `z_j` the Gaussians requested by `noise`."""
    _check_operands(x, ks, bs)
    resolve_backend(backend, x.device, SUPPORTED_BACKENDS)
    zs = [(c, draw.materialize(x)) for c, draw in noise if c != 0.0]
    return reference.solver_step(x, ks, a, bs, zs)
