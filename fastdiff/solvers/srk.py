"""SRK, fastdiff's default stochastic sampler: the multistep form of the stochastic Runge-Kutta step (ALGORITHMS.md
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
The first step has no D_prev and evaluates at its start (first-order exponential step); the step to
sigma' = 0 is the denoising step x' = D(x, sigma). With counter noise the update regenerates z1 in the fused
kernel (N = sigma sqrt(stage_var) z1) rather than reading x~, so it reads x, D~ and D_prev only; a noise_sampler's
z1 is drawn once and N enters through x~. `coupled=False` draws N independent of the step's noise
(same variances): the ablation. The callback reports the step's start (x, sigma) and its one evaluation D~.
"""

from __future__ import annotations

import math

from fastdiff.ops.solver_step import solver_step
from fastdiff.solvers.base import Evaluation, Solver, StepOutput
from fastdiff.solvers.srk_noise import step_draws
from fastdiff.srk_coefficients import multistep_form, stage_fraction
from fastdiff.validation import check_flag, check_number

DEFAULT_THETA = 0.085


class SRK(Solver):
    name = "srk"
    stochastic = True

    def __init__(self, theta: float = DEFAULT_THETA, coupled: bool = True):
        self.theta = check_number(theta, "theta", 0.0, 0.5)
        self.coupled = check_flag(coupled, "coupled")
        self.previous = None  # (D_prev, lambda_prev)

    def step(self, ctx, i, x):
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        if sigma_next == 0.0:
            denoised = yield Evaluation(x, sigma)
            yield StepOutput(denoised, denoised, x, sigma)  # the denoising step x = D
            return
        h = math.log(sigma / sigma_next)
        theta = stage_fraction(h, self.theta) if self.previous is not None else 0.0
        k = multistep_form(h, theta)
        if theta == 0.0:
            denoised = yield Evaluation(x, sigma)
            yield self._start_update(ctx, i, x, k, denoised)
            return
        previous, lambda_prev = self.previous
        z1, z2 = step_draws(ctx, i)
        decay, rise = math.exp(-2.0 * theta * h), -math.expm1(-2.0 * theta * h)
        stage_x = solver_step(x, [previous], decay, [rise], noise=[(sigma * math.sqrt(k.stage_var), z1)], backend=ctx.backend)
        stage_lambda = -math.log(sigma) + theta * h
        denoised = yield Evaluation(stage_x, math.exp(-stage_lambda))
        b = k.slope / (stage_lambda - lambda_prev)
        # The update's noise is kappa N + R, N = x~ - decay x - rise D_prev the stage's own noise.
        kappa = math.exp(-2.0 * (1.0 - theta) * h) if self.coupled else 0.0
        rest = k.rest_var if self.coupled else k.phi0
        noise_rest = (sigma_next * math.sqrt(rest), z2)
        if ctx.noise.replayable:  # regenerate z1 in the kernel: reads x, D~, D_prev only
            ks, bs = [denoised, previous], [k.phi0 + b, -b]
            noise = [(kappa * sigma * math.sqrt(k.stage_var), z1), noise_rest]
            x_next = solver_step(x, ks, math.exp(-2.0 * h), bs, noise=noise, backend=ctx.backend)
        else:  # a noise_sampler's z1 is drawn once: N enters through x~
            ks, bs = [denoised, previous, stage_x], [k.phi0 + b, -b - kappa * rise, kappa]
            x_next = solver_step(x, ks, math.exp(-2.0 * h) - kappa * decay, bs, noise=[noise_rest], backend=ctx.backend)
        self.previous = (denoised, stage_lambda)
        yield StepOutput(x_next, denoised, x, sigma)

    def _start_update(self, ctx, i, x, k, denoised):
        """theta = 0, D evaluated at the step start: DPM-Solver++(2M) SDE's midpoint step (first-order on the first step)."""
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        lam = -math.log(sigma)
        ks, bs = [denoised], [k.phi0]
        if self.previous is not None:
            previous, lambda_prev = self.previous
            b = k.slope / (lam - lambda_prev)
            ks, bs = [denoised, previous], [k.phi0 + b, -b]
        noise = [(sigma_next * math.sqrt(k.phi0), ctx.draw(i))]
        x_next = solver_step(x, ks, math.exp(-2.0 * k.h), bs, noise=noise, backend=ctx.backend)
        self.previous = (denoised, lam)
        return StepOutput(x_next, denoised, x, sigma)
