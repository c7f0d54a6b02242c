"""k-diffusion's `eta` and `s_noise` options, shared by the step rules that add fresh noise to an ODE step
(`euler_ancestral`, `dpmpp_2m_sde`, `dpmpp_3m_sde`): eta scales how much of the step's variance is fresh noise
(eta = 0 is the deterministic ODE step), s_noise scales that noise. The rule draws noise when both are positive."""

from __future__ import annotations

import math

from fastdiff.ops.solver_step import NoiseDraw
from fastdiff.solvers.base import Solver, StepContext
from fastdiff.validation import check_number


class EtaNoiseSolver(Solver):
    def __init__(self, eta: float = 1.0, s_noise: float = 1.0):
        self.eta = check_number(eta, "eta")
        self.s_noise = check_number(s_noise, "s_noise")
        self.stochastic = self.eta > 0.0 and self.s_noise > 0.0

    def from_infinity(self) -> tuple[float, float]:
        """The DPM-Solver++ SDE step's limit as sigma -> inf, x = sigma n: the kept part (sigma'/sigma) e^{-eta h} x =
        sigma' (sigma'/sigma)^eta n vanishes and the noise tends to s_noise sigma' z, (0, s_noise), for eta > 0;
        eta = 0 is the ODE step's (1, 0)."""
        return (0.0, self.s_noise) if self.eta > 0.0 else (1.0, 0.0)

    def sde_noise(self, ctx: StepContext, i: int, h: float) -> list[tuple[float, NoiseDraw]]:
        """The DPM-Solver++ SDE noise of step i, h = log(sigma/sigma'): s_noise sigma' sqrt(1 - e^{-2 eta h}) z,
        none when the rule draws no noise."""
        if not self.stochastic:
            return []
        return [(self.s_noise * ctx.sigmas[i + 1] * math.sqrt(-math.expm1(-2.0 * self.eta * h)), ctx.draw(i))]
