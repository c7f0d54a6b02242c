"""The two standard normals of an SRK step, each requested over its own part (sigma, s) and (s, sigma') of the step.

From the counter stream they are the Gaussians of (step i, stage 0) and (step i, stage 1). `srk` splits the step at
its stage point sigma~, so z1 is the noise of (sigma, sigma~) and z2 that of (sigma~, sigma'). `srk_dp` and
`srk_score` couple two correlated Gaussians rather than split the step in time (their stage point may lie past
sigma'), and split at the geometric mean s = sqrt(sigma sigma'). A user `noise_sampler(sigma, sigma_next)` is called
with those intervals, and Brownian noise (`noise="brownian"`) draws the increments of one path there, so a coarse
step's noise is close to the fine steps' noise over the same sigmas; a sampler returning fresh noise on every call
works as well. Each Gaussian enters exactly one `solver_step` call (the update reuses z1 through the stage point), so
neither is drawn twice. `CoupledNoiseSolver` is the base of the rules whose stage noise is coupled to the step's noise.
"""

from __future__ import annotations

from fastdiff.ops.solver_step import NoiseDraw
from fastdiff.solvers.base import Solver, StepContext
from fastdiff.validation import check_flag


def step_draws(ctx: StepContext, i: int, split: float) -> tuple[NoiseDraw, NoiseDraw]:
    """(z1, z2) requests for step i over (sigma, split) and (split, sigma'), sigma' < split < sigma."""
    sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
    return (
        ctx.draw(i, stage=0, sigma=sigma, sigma_next=split),
        ctx.draw(i, stage=1, sigma=split, sigma_next=sigma_next),
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
