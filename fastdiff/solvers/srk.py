"""SRK, fastdiff's default stochastic sampler: the multistep form of the stochastic Runge-Kutta step (docs/ALGORITHMS.md
sections 3 and 11). One evaluation per step.

The data-prediction SRK (`srk_dp`) spends two evaluations per step: one at the step start and one at a stage
point whose noise is coupled to the step's noise. Here the stage evaluation is the only one: the corrector
pairs it with the previous step's stage evaluation, the way DPM-Solver++(2M) pairs consecutive steps. With
h = log(sigma/sigma'), lambda = -log sigma, stage fraction theta and the previous evaluation D_prev at lambda_prev:
    x~ = e^{-2 theta h} x + (1 - e^{-2 theta h}) D_prev + N                       at sigma~ = sigma e^{-theta h}
    D~ = D(x~, sigma~)
    x' = e^{-2h} x + Phi0 D~ + Phi0 (1/2 - theta) h (D~ - D_prev)/(lambda~ - lambda_prev) + e^{-2(1-theta)h} N + R
N and R are the exact OU noises of [0, theta h] and [theta h, h] (`fastdiff.srk_coefficients.multistep_form`),
so the stage sees the part of the step's Brownian path that precedes it; this coupling keeps weak order 2
for every theta. The free theta only moves the error constant: the leading h^2 variance error on Gaussian
targets with uniform log-sigma steps changes sign at theta ~ 0.087 (measured, bench/SRK.md), hence the
default 0.085. For steps with h >= 1.5 the stage falls back to the step start (`stage_fraction`), where the
step is DPM-Solver++(2M) SDE's midpoint step, the most robust at very large steps; `theta=0` is that sampler.
The first step has no D_prev and evaluates at its start (first-order exponential step). From sigma = inf the loop takes
the step x' = D + sigma' z (`CoupledNoiseSolver.from_infinity`, the limit of that first step) and the history starts at
step 1 with the first-step rule again: D(n, inf) is not carried as D_prev. With counter noise the
update regenerates z1 in the fused kernel (N = sigma sqrt(stage_var) z1) rather than reading x~, so it reads x, D~
and D_prev only; a noise_sampler's z1 is drawn once and N enters through x~. `coupled=False` draws N independent of
the step's noise (same variances): the ablation. The callback reports the step's start (x, sigma) and its one evaluation D~.
"""

from __future__ import annotations

import math

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, StepOutput
from fastdiff.solvers.srk_noise import CoupledNoiseSolver, step_draws
from fastdiff.srk_coefficients import multistep_form, stage_fraction
from fastdiff.validation import check_number

DEFAULT_THETA = 0.085


class SRK(CoupledNoiseSolver):
    name = "srk"
    evaluations_per_step = 1

    def __init__(self, theta: float = DEFAULT_THETA, coupled: bool = True):
        self.theta = check_number(theta, "theta", 0.0, 0.5)
        super().__init__(coupled)
        self.previous = None  # (D_prev, lambda_prev)

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        h = math.log(sigma / sigma_next)
        theta = stage_fraction(h, self.theta) if self.previous is not None else 0.0
        k = multistep_form(h, theta)
        if theta == 0.0:
            denoised = yield Evaluation(x, sigma)
            yield self._start_update(ctx, i, x, k, denoised)
            return
        D_prev, lambda_prev = self.previous
        lambda_stage = -math.log(sigma) + theta * h
        z1, z2 = step_draws(ctx, i, math.exp(-lambda_stage))
        N_std = sigma * math.sqrt(k.stage_var)  # N = N_std z1
        R_std = sigma_next * math.sqrt(k.rest_var if self.coupled else k.phi0)  # R = R_std z2
        carry = k.noise_carry if self.coupled else 0.0  # x' takes e^{-2(1-theta)h} N
        # x~ = e^{-2 theta h} x + (1 - e^{-2 theta h}) D_prev + N
        x_stage = solver_step(x, [D_prev], k.stage_decay, [k.stage_rise], noise=[(N_std, z1)], backend=ctx.backend)
        D_stage = yield Evaluation(x_stage, math.exp(-lambda_stage))
        gain = k.slope / (lambda_stage - lambda_prev)  # x' gains Phi0 (1/2 - theta) h (D~ - D_prev)/(lambda~ - lambda_prev)
        if ctx.noise.replayable:  # regenerate z1 in the kernel: reads x, D~, D_prev only
            # x' = e^{-2h} x + (Phi0 + gain) D~ - gain D_prev + carry N + R
            x_next = solver_step(
                x,
                [D_stage, D_prev],
                k.decay,
                [k.phi0 + gain, -gain],
                noise=[(carry * sigma * math.sqrt(k.stage_var), z1), (R_std, z2)],
                backend=ctx.backend,
            )
        else:  # a noise_sampler's z1 is drawn once: N enters as x~ - e^{-2 theta h} x - (1 - e^{-2 theta h}) D_prev
            x_next = solver_step(
                x,
                [D_stage, D_prev, x_stage],
                k.decay - carry * k.stage_decay,
                [k.phi0 + gain, -gain - carry * k.stage_rise, carry],
                noise=[(R_std, z2)],
                backend=ctx.backend,
            )
        self.previous = (D_stage, lambda_stage)
        yield StepOutput(x_next, D_stage, x, sigma)

    def _start_update(self, ctx, i, x, k, denoised):
        """theta = 0, D evaluated at the step start: DPM-Solver++(2M) SDE's midpoint step (first-order on the first step),
        x' = e^{-2h} x + Phi0 D + gain (D - D_prev) + sigma' sqrt(Phi0) z."""
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        lam = -math.log(sigma)
        ks, bs = [denoised], [k.phi0]
        if self.previous is not None:
            D_prev, lambda_prev = self.previous
            gain = k.slope / (lam - lambda_prev)
            ks, bs = [denoised, D_prev], [k.phi0 + gain, -gain]
        noise = [(sigma_next * math.sqrt(k.phi0), ctx.draw(i))]
        x_next = solver_step(x, ks, k.decay, bs, noise=noise, backend=ctx.backend)
        self.previous = (denoised, lam)
        return StepOutput(x_next, denoised, x, sigma)
