"""The two standard normals of an SRK step: z1 (stage 0) and z2 (stage 1) of step i.

From the counter stream they are the Gaussians of (step i, stage 0) and (step i, stage 1). A user
`noise_sampler(sigma, sigma_next)` is called once for each, on the two disjoint halves of the step,
(sigma, sigma_mid) for z1 and (sigma_mid, sigma') for z2 with sigma_mid = sqrt(sigma sigma') the
geometric mean: a Brownian-tree sampler (the same noise for the same interval) then gives independent
z1, z2, and a sampler returning fresh noise on every call works as well. Each Gaussian enters exactly
one `solver_step` call (the update reuses z2 through the stage point), so neither is ever drawn twice.
`CoupledNoiseSolver` is the base of the rules whose stage noise is coupled to the step's noise (`coupled`).
"""

from __future__ import annotations

import math

from fastdiff.ops.solver_step import NoiseDraw
from fastdiff.solvers.base import Solver, StepContext
from fastdiff.validation import check_flag


def step_draws(ctx: StepContext, i: int) -> tuple[NoiseDraw, NoiseDraw]:
    """(z1, z2) requests for step i, which must end at a positive sigma'."""
    sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    sigma_mid = math.sqrt(sigma * sigma_next)
    return (
        ctx.draw(i, stage=0, sigma=sigma, sigma_next=sigma_mid),
        ctx.draw(i, stage=1, sigma=sigma_mid, sigma_next=sigma_next),
    )


class CoupledNoiseSolver(Solver):
    """Base of the SRK rules (`srk`, `srk_dp`, `srk_score`). `coupled=False` keeps the variances of the two Gaussians
    but draws them independently: the ablation, which loses the weak order 2 (measured in tests/test_srk.py).

    From sigma = inf they all take the exact reverse-SDE transition x' = D + sigma' z, (kept, fresh) = (0, 1): the limit
    of `srk`'s and `srk_dp`'s own first step (`srk_score` in VP coordinates has none, see its docstring)."""

    stochastic = True

    def __init__(self, coupled: bool = True):
        self.coupled = check_flag(coupled, "coupled")
        self.order = 2 if self.coupled else 1

    def from_infinity(self) -> tuple[float, float]:
        return 0.0, 1.0
