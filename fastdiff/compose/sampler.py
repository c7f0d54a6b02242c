"""Sampling a superposition of denoisers (SuperDiff OR / AND) with the models' log-densities tracked on the way.

SDE path (default): Euler-Maruyama steps of the reverse SDE in the EDM form, one fused `ito_step` per step:
x' = x + Delta sum_i kappa_i s_i + sqrt(Delta) z, with the Itô estimate of every log q_i updated from the same
reductions. Every step, the last one to sigma = 0 included, is such a step (no separate denoising step), so the
returned log-densities refer to the returned samples at the grid's last sigma.

ODE path (`ode=True`): Euler steps of the probability-flow ODE dx/dsigma = -sigma u, u = sum_i kappa_i s_i, with
d log q_i/dsigma = sigma div s_i + <s_i, sigma s_i + dx/dsigma> (the change of log q_i along any path), div s_i
by Hutchinson's estimator with autograd (`n_probes` Gaussian probes from the counter stream, shared by the
models). It is a plain PyTorch path (one vector-Jacobian product per model and probe), for checks and small models.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastdiff.compose.superpose import Denoiser, Superposition
from fastdiff.density.ito import check_forward_noise
from fastdiff.driver import DenoiserCall, state_dtype
from fastdiff.finite_watch import FiniteWatch
from fastdiff.noise import STREAM_PROBE, device_keys, sample_seeds
from fastdiff.ops.ito_step import ito_step
from fastdiff.ops.philox import CounterNoise
from fastdiff.ops.solver_step import NoiseDraw
from fastdiff.progress import progress_range
from fastdiff.reference import ito_step as reference
from fastdiff.reference.philox import philox_normal
from fastdiff.validation import check_flag, check_grid, check_positive_int, check_sample


def _noise(seed, x: torch.Tensor, backend: str) -> CounterNoise:
    keys = device_keys(seed, x.shape[0], x.device)
    if keys is not None:
        return CounterNoise.from_keys(keys, backend=backend)
    return CounterNoise(sample_seeds(seed, x.shape[0]), x.device, backend=backend)


def sample_superposed(
    denoisers: Sequence[Denoiser] | Superposition,
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

    Returns (samples in x's dtype, log_q [B, M]): the estimates of log q_i(x_end, sigma_end) - log q_i(x, sigma_0)
    plus `log_q_start` (default 0; pass log q_i(x, sigma_0) where known). OR's weights use these running values,
    so the start matters only when the models' densities at sigma_0 differ (they nearly coincide at large sigma_0).
    The run builds no autograd graph. With `check_finite` (default) a model output with NaN or Inf raises
    `fastdiff.NonFiniteError` at the end, naming the model, the first step and its sigma (flags read once).
    """
    if isinstance(denoisers, Superposition):
        if (mode, temperature, log_weights, bias, rcond) != ("or", 1.0, None, 0.0, None):
            raise ValueError("denoisers is a Superposition: configure mode, temperature, log_weights, bias and rcond on it")
        config = denoisers
    else:
        config = Superposition(denoisers, mode, temperature, log_weights, bias, *(() if rcond is None else (rcond,)))
    check_sample(x)
    host, _ = check_grid(sigmas, x.device)
    if ode:
        if sampler_options:
            raise ValueError(f"ode=True injects no noise; sampler options {sorted(sampler_options)} do not apply")
        check_positive_int(n_probes, "n_probes")
    else:
        check_forward_noise("euler_maruyama", **sampler_options)
    work = state_dtype(x.dtype)
    m = len(config)
    ell = torch.zeros(x.shape[0], m, dtype=work, device=x.device)
    if log_q_start is not None:
        if not isinstance(log_q_start, torch.Tensor) or log_q_start.shape != ell.shape:
            got = tuple(log_q_start.shape) if isinstance(log_q_start, torch.Tensor) else type(log_q_start).__name__
            raise ValueError(f"log_q_start must be a [B, M] = {tuple(ell.shape)} tensor, got {got}")
        check_sample(log_q_start, "log_q_start")
        ell += log_q_start.to(ell)
    check_flag(check_finite, "check_finite")
    watch = FiniteWatch() if check_finite else None
    calls = [DenoiserCall(d, x.dtype, extra_args, watch, f"model {j}") for j, d in enumerate(config.denoisers)]
    noise = _noise(seed, x, backend)
    with torch.no_grad():
        state = x.to(work)
        for i in progress_range(len(host) - 1, progress, desc=f"fastdiff superpose {config.mode}"):
            sigma, sigma_next = host[i], host[i + 1]
            for call in calls:
                call.step = i
            if ode:
                state, ell = _ode_step(config, calls, state, sigma, sigma_next, ell, noise.keys, i, n_probes)
            else:
                denoised = [call(state, sigma) for call in calls]
                state, ell, _ = ito_step(
                    state, denoised, sigma, sigma_next, ell, NoiseDraw(noise, i, 0, sigma, sigma_next), config.mode,
                    config.temperature, config.log_weights, config.bias, config.rcond, backend=backend,
                )
    if watch is not None:
        watch.check()
    return state.to(x.dtype), ell


def _ode_step(
    config: Superposition,
    calls: list[DenoiserCall],
    x: torch.Tensor,
    sigma: float,
    sigma_next: float,
    ell: torch.Tensor,
    keys: torch.Tensor,
    step: int,
    n_probes: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One Euler step of the superposed probability-flow ODE and the log q_i updates (Hutchinson divergences)."""
    batch, acc = x.shape[0], x.dtype
    numel = x[0].numel()
    probes = [philox_normal(keys, numel, step, k, STREAM_PROBE, acc).view(x.shape) for k in range(n_probes)]
    scores, divergences = [], []
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        for call in calls:
            s = (call(xr, sigma) - xr) / sigma**2
            div = torch.zeros(batch, dtype=acc, device=x.device)
            for k, v in enumerate(probes):
                (vjp,) = torch.autograd.grad(s, xr, v, retain_graph=k + 1 < n_probes)
                div = div + (vjp * v).reshape(batch, -1).sum(1)
            scores.append(s.detach().reshape(batch, -1))
            divergences.append(div / n_probes)
    s = torch.stack(scores, dim=1)  # [B, M, N]
    div = torch.stack(divergences, dim=1)
    gram = s @ s.mT
    h = (sigma - sigma_next) * sigma  # -dsigma * sigma > 0
    own = h * (div + torch.diagonal(gram, dim1=-2, dim2=-1))
    log_w = torch.tensor(config.log_weights, dtype=acc, device=x.device)
    if config.mode == "or":
        kappa = reference.or_weights(ell, config.temperature, log_w)
    else:
        # ell_i + h (G kappa)_i - own_i - b_i equal for every i, sum kappa = 1 (regularized as the SDE path)
        bias = torch.tensor(config.bias, dtype=acc, device=x.device)
        eps = reference.regularization(gram, h, config.rcond)
        matrix = h * gram + eps[:, None, None] * torch.eye(len(calls), dtype=acc, device=x.device)
        kappa = reference.solve_bordered(matrix, bias - ell + own)
    pull = (gram @ kappa[:, :, None]).squeeze(-1)  # <s_i, u>
    x_next = x + h * (kappa[:, :, None] * s).sum(1).view(x.shape)
    return x_next, ell - own + h * pull

