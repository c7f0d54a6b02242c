"""Sampling a superposition of denoisers (SuperDiff OR / AND) with the models' log-densities tracked on the way.

The walk over the grid is `fastdiff.stepping.solve` with one of the step rules of `fastdiff.compose.steps`; every
request D(x, sigma) is answered with the list of the M models' outputs. Every step, the last one to sigma' = 0
included, is a step of the chosen rule (no separate denoising step), so the returned log-densities refer to the
returned samples at the grid's last sigma.

SDE path (default): Euler-Maruyama steps of the reverse SDE in the EDM form, one fused `ito_step` per step:
x' = x + Delta sum_i kappa_i s_i + sqrt(Delta) z, Delta = sigma^2 - sigma'^2, with the Itô estimate of every log q_i
updated from the same reductions.

ODE path (`ode=True`): Euler steps of the probability-flow ODE dx/dsigma = -sigma u, u = sum_i kappa_i s_i, with
d log q_i/dsigma = sigma div s_i + <s_i, sigma s_i + dx/dsigma> (the change of log q_i along any path), div s_i
by Hutchinson's estimator with autograd (`n_probes` Gaussian probes from the counter stream, shared by the
models). It is a plain PyTorch path (one vector-Jacobian product per model and probe), for checks and small models;
its step to sigma' = 0 lands at x + sigma^2 u = sum_i kappa_i D_i.

Flow-matching models (`fastdiff.models.FlowDenoiser`) superpose like any denoisers, on a grid that starts below
t = 1: sigmas[0] = inf is refused. From infinite noise the Euler-Maruyama step adds sqrt(Delta) z with Delta = inf,
AND's weights (which cancel the step's noise in the log q_i differences, of order <z, D_i - D_j>/sigma, through a
term of order kappa/sigma^2) grow like sigma, and the exact transition x' = D_mix + sigma' z injects noise of variance
sigma'^2, not the forward process's Delta, so no Itô estimate holds for it. A finite start such as
`get_sigmas("flow", n, t_max=0.99, shift=3.0)` with x = sigmas[0] * randn samples the flow models' superposition
(tests/test_flow_features.py).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from fastdiff.compose.config import Denoiser, SuperpositionConfig
from fastdiff.compose.steps import SuperposedEulerMaruyama, SuperposedFlowEuler
from fastdiff.density.ito import check_forward_noise
from fastdiff.driver import DenoiserCall
from fastdiff.dtypes import working_dtype
from fastdiff.finite_watch import FiniteWatch
from fastdiff.ops.philox import CounterNoise
from fastdiff.progress import progress_bar
from fastdiff.solvers.base import StepContext, StepOutput
from fastdiff.stepping import solve
from fastdiff.validation import check_flag, check_grid, check_positive_int, check_progress, check_sample


def sample_superposed(
    denoisers: Sequence[Denoiser] | SuperpositionConfig,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    mode: str = "or",
    *,
    temperature: float = 1.0,
    log_weights: Sequence[float] | None = None,
    bias: float | Sequence[float] = 0.0,
    rcond: float | None = None,
    seed: int | Sequence[int] | torch.Tensor | None = None,
    backend: str = "auto",
    progress: bool | None = False,
    ode: bool = False,
    n_probes: int = 1,
    log_q_start: torch.Tensor | None = None,
    extra_args: dict | None = None,
    check_finite: bool = True,
    **sampler_options: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample the superposition of `denoisers` from noise `x` at `sigmas[0]` down the grid; see the module docstring.

    `denoisers` is a list of D(x, sigma) (configured by `mode`, `temperature`, `log_weights`, `bias`, `rcond`
    as in `fastdiff.compose.superpose`) or a `Superposition` (then those arguments must stay at their defaults).
    Noise: the counter stream keyed by `seed` (per-sample seeds, as in `fastdiff.sample`), so every backend
    draws the same z and a sample does not depend on its batch. `sampler_options` may only restate the forward
    noise scale (s_noise=1, eta=1, s_churn=0); anything else raises, since it would invalidate the estimates.
    Flow models (`fastdiff.models.FlowDenoiser`) work on a grid from a finite start (t < 1); sigmas[0] = inf raises.

    Returns (samples in x's dtype, log_q [B, M]): the estimates of log q_i(x_end, sigma_end) - log q_i(x, sigma_0)
    plus `log_q_start` (default 0; pass log q_i(x, sigma_0) where known). OR's weights use these running values,
    so the start matters only when the models' densities at sigma_0 differ (they nearly coincide at large sigma_0).
    The run builds no autograd graph. With `check_finite` (default) a model output with NaN or Inf raises
    `fastdiff.NonFiniteError` at the end, naming the model, the first step and its sigma (flags read once).
    """
    if isinstance(denoisers, SuperpositionConfig):
        if (mode, temperature, log_weights, bias, rcond) != ("or", 1.0, None, 0.0, None):
            raise ValueError("denoisers is a Superposition: configure mode, temperature, log_weights, bias and rcond on it")
        config = denoisers
    else:
        config = SuperpositionConfig(denoisers, mode, temperature, log_weights, bias, *(() if rcond is None else (rcond,)))
    check_sample(x)
    host, grid = check_grid(sigmas, x.device)
    if math.isinf(host[0]):
        raise ValueError(
            "sigmas[0] = inf (the flow time t = 1): the superposed SDE and ODE steps and their log-density estimates have "
            "no finite limit from infinite noise; start at a finite noise level, e.g. "
            "fastdiff.get_sigmas('flow', n, t_max=0.99, shift=3.0) with x = sigmas[0] * randn (see fastdiff.compose.sampler)"
        )
    if ode:
        if sampler_options:
            raise ValueError(f"ode=True injects no noise; sampler options {sorted(sampler_options)} do not apply")
        check_positive_int(n_probes, "n_probes")
    else:
        check_forward_noise("euler_maruyama", **sampler_options)
    check_progress(progress)
    ell = _log_q_start(log_q_start, x.shape[0], len(config), working_dtype(x.dtype), x.device)
    rule = SuperposedFlowEuler(config, ell, n_probes) if ode else SuperposedEulerMaruyama(config, ell)
    check_flag(check_finite, "check_finite")
    watch = FiniteWatch() if check_finite else None
    calls = [DenoiserCall(d, x.dtype, extra_args, watch, f"model {j}") for j, d in enumerate(config.denoisers)]
    noise = CounterNoise.from_seed(seed, x.shape[0], x.device, backend, rule.noise_stream)
    ctx = StepContext(sigmas=host, sigmas_tensor=grid, noise=noise, backend=backend)
    bar = progress_bar(len(host) - 1, progress, desc=f"fastdiff superpose {config.mode}")

    def evaluate(z: torch.Tensor, sigma: float) -> list[torch.Tensor]:
        """[D_1(z, sigma), ..., D_M(z, sigma)], with the autograd graph when the step asks for it (z requires grad)."""
        with torch.set_grad_enabled(z.requires_grad):
            return [call(z, sigma) for call in calls]

    def on_step(i: int, out: StepOutput) -> None:
        for call in calls:
            call.step = i + 1
        bar.update()

    with torch.no_grad(), bar:
        state = solve(rule, ctx, x.to(working_dtype(x.dtype)), evaluate, on_step)
    if watch is not None:
        watch.check()
    return state.to(x.dtype), rule.ell


def _log_q_start(start: torch.Tensor | None, batch: int, m: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The estimates' starting values ell [B, M] in the working dtype: 0, plus `log_q_start` when given."""
    ell = torch.zeros(batch, m, dtype=dtype, device=device)
    if start is not None:
        if not isinstance(start, torch.Tensor) or start.shape != ell.shape:
            got = tuple(start.shape) if isinstance(start, torch.Tensor) else type(start).__name__
            raise ValueError(f"log_q_start must be a [B, M] = {tuple(ell.shape)} tensor, got {got}")
        check_sample(start, "log_q_start")
        ell += start.to(ell)
    return ell
