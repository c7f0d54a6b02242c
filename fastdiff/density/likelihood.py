"""Log-likelihoods through the probability-flow ODE (docs/ALGORITHMS.md section 5).

Along dx/dsigma = (x - D(x, sigma))/sigma, run from the data end sigma_min up to sigma_max,

    log p_{sigma_min}(x0) = log p_{sigma_max}(x_T) + integral_{sigma_min}^{sigma_max} (d - div_x D(x, sigma)) / sigma dsigma,

the instantaneous change of variables (Chen et al. 2018; Song et al. 2021, Appendix D.2) in the
variance-exploding form, div_x(dx/dsigma) = (d - div_x D)/sigma: d log p(x(sigma), sigma)/dsigma = -div_x(dx/dsigma)
along the flow, and the density falls as sigma grows (the divergence is positive), hence the plus sign.
The divergence of D is exact
(autograd, one vector-Jacobian product per dimension) or Hutchinson's estimate v^T (dD/dx) v
averaged over `n_probes` probes (Hutchinson 1990; FFJORD, Grathwohl et al. 2019).

A grid may end at sigma_max = inf (the flow time t = 1): the last step, from the largest finite sigma_K, runs in the
unit-noise coordinates n = x/sigma, u = 1/sigma, where the ODE is dn/du = D(n/u, 1/u) and
log p_n(n, u) = log p_x(x, sigma) + d log sigma, d log p_n/du = -div_n D with div_n D = sigma div_x D (finite at
u = 0, where the denoiser receives the unit noise n), so

    log p_{sigma_K}(x_K) = log N(n_1; 0, I) - d log sigma_K - int_0^{1/sigma_K} div_n D du,

exactly: at sigma = inf every model's unit-noise state is N(0, I), so no prior error is left.

The integrator here is its own, not a step rule of `fastdiff.solvers` walked by `fastdiff.stepping`: it runs up the
grid (sigma_min -> sigma_max), carries the log-density integral beside the state, and takes a divergence at every
stage, so its Euler and Heun stages (`_stages`) fuse the state update with the trace term (`fastdiff.ops.trace_step`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch

from fastdiff.backends import resolve_backend
from fastdiff.density.divergence import Denoiser, exact_divergence, vjp
from fastdiff.dtypes import working_dtype
from fastdiff.finite_watch import FiniteWatch
from fastdiff.noise import seed_keys
from fastdiff.ops.solver_step import solver_step
from fastdiff.ops.trace_step import SUPPORTED_BACKENDS, probes, trace_step
from fastdiff.progress import progress_range
from fastdiff.reference.trace_step import PROBE_STRIDE, PROBES
from fastdiff.validation import check_flag, check_positive_int, check_sample

ESTIMATORS = ("hutchinson", "exact")
INTEGRATORS = ("heun", "euler")


class LikelihoodResult(NamedTuple):
    """What `ode_log_likelihood(..., return_info=True)` returns (float64 [B] tensors unless stated).

    log_prob: log p_{sigma_min}(x0). prior_log_prob: log p_{sigma_max}(x_T). divergence: the integral
    of div_x(dx/dsigma) from sigma_min to sigma_max (log_prob = prior_log_prob + divergence; with sigma_max = inf
    it also holds the change of variables -d log sigma_K to the unit-noise state, see the module docstring).
    x_noise: x_T, the end of the ODE run (state dtype; the unit noise n when sigma_max = inf). nfe: points
    (x, sigma) where the network ran per sample (steps x stages). n_vjp: vector-Jacobian products per sample
    (nfe x n_probes, or nfe x d).
    """

    log_prob: torch.Tensor
    prior_log_prob: torch.Tensor
    divergence: torch.Tensor
    x_noise: torch.Tensor
    nfe: int
    n_vjp: int


def gaussian_prior(x: torch.Tensor, sigma_max: float) -> torch.Tensor:
    """log N(x; 0, sigma_max^2 I) per sample, float64 [B]."""
    flat = x.reshape(x.shape[0], -1).to(torch.float64)
    d = flat.shape[1]
    return -0.5 * (flat**2).sum(-1) / sigma_max**2 - 0.5 * d * math.log(2.0 * math.pi * sigma_max**2)


def increasing_grid(sigmas: object) -> list[float]:
    """The integration grid sigma_min < ... < sigma_max as host floats.

    Accepts it increasing, or as a sampling grid (strictly decreasing, possibly ending in 0, as
    `fastdiff.get_sigmas` makes it), which is reversed with its trailing 0 dropped: the ODE starts
    at the smallest positive sigma. Its largest entry may be +inf (the flow time t = 1, where a flow grid starts).
    """
    if isinstance(sigmas, torch.Tensor):
        if sigmas.ndim != 1 or not sigmas.dtype.is_floating_point:
            raise ValueError(f"sigmas must be a 1-D floating tensor, got dtype {sigmas.dtype}, shape {tuple(sigmas.shape)}")
        host = sigmas.detach().to("cpu", torch.float64).tolist()
    elif isinstance(sigmas, Sequence) and not isinstance(sigmas, str):
        if not all(isinstance(s, numbers.Real) and not isinstance(s, bool) for s in sigmas):
            raise TypeError("sigmas entries must be numbers")
        host = [float(s) for s in sigmas]
    else:
        raise TypeError(f"sigmas must be a 1-D tensor or a sequence of floats, got {type(sigmas).__name__}")
    if len(host) >= 2 and host[0] > host[-1]:
        host = host[::-1]
    if host and host[0] == 0.0:
        host = host[1:]
    if len(host) < 2:
        raise ValueError(f"sigmas needs at least two positive entries (sigma_min and sigma_max), got {len(host)}")
    for k, s in enumerate(host):
        if not (s > 0 and (math.isfinite(s) or (s == math.inf and k == len(host) - 1))):
            raise ValueError(
                f"sigmas must be positive and finite except that sigma_max may be +inf (the flow time t = 1), got {s} "
                f"as entry {k} of the increasing grid (a single 0 may end a decreasing sampling grid)"
            )
    if not all(b > a for a, b in zip(host[:-1], host[1:], strict=True)):
        raise ValueError("sigmas must be strictly monotone")
    return host


def _check_options(estimator: object, n_probes: object, probe: object, solver: object) -> None:
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    if not 1 <= check_positive_int(n_probes, "n_probes", minimum=-math.inf) <= PROBE_STRIDE:
        raise ValueError(f"n_probes must be in [1, {PROBE_STRIDE}], got {n_probes}")
    if probe not in PROBES:
        raise ValueError(f"probe must be one of {PROBES}, got {probe!r}")
    if solver not in INTEGRATORS:
        raise ValueError(f"solver must be one of {INTEGRATORS}, got {solver!r}")


class _Stage(NamedTuple):
    """One network evaluation's update: x_out = a x + sum_i b_i k_i and total += c + w div_x D."""

    a: float
    bs: list[float]
    c: float
    w: float


def _stages(solver: str, s: float, s_next: float, d: int) -> list[_Stage]:
    """Coefficients of the stages of one step s -> s_next > s, for x [k_i as listed in `ode_log_likelihood`].

    Euler: x' = x + h (x - D)/s, total += h (d - div D)/s.
    Heun (EDM Alg. 1 run upwards): predictor x~ = Euler step; x' = x + (h/2) [(x - D)/s + (x~ - D~)/s'],
    total += (h/2) [(d - div D)/s + (d - div D~)/s'], the second stage at (x~, s').
    s_next = inf: the same rules for dn/du = D in n = x/sigma, u = 1/sigma from u = 1/s to 0 (module docstring).
    """
    if math.isinf(s_next):
        return _stages_to_infinity(solver, s, d)
    h = s_next - s
    if solver == "euler":
        return [_Stage(1 + h / s, [-h / s], h * d / s, -h / s)]
    half, half_next = 0.5 * h / s, 0.5 * h / s_next
    predictor = _Stage(1 + h / s, [-h / s], half * d, -half)
    corrector = _Stage(1 + half, [-half, half_next, -half_next], half_next * d, -half_next)
    return [predictor, corrector]


def _stages_to_infinity(solver: str, s: float, d: int) -> list[_Stage]:
    """The step s -> inf, the state moving to the unit noise n = x/sigma, total += -d log s - int_0^{1/s} div_n D du.

    Euler: n' = (x - D)/s (the DDIM step to infinity), total += -d log s - div_x D (div_n D = s div_x D at u = 1/s).
    Heun: predictor n~ = (x - D)/s; n' = x/s - (D + D~)/(2 s), D~ = D(n~, inf) the denoiser on the unit noise,
    total += -d log s - div_x D / 2 - div_n D~ / (2 s) (the trapezoid in u).
    """
    if solver == "euler":
        return [_Stage(1 / s, [-1 / s], -d * math.log(s), -1.0)]
    predictor = _Stage(1 / s, [-1 / s], -d * math.log(s), -0.5)
    corrector = _Stage(1 / s, [-0.5 / s, 0.0, -0.5 / s], 0.0, -0.5 / s)
    return [predictor, corrector]


def ode_log_likelihood(
    denoiser: Denoiser,
    x0: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float],
    *,
    estimator: str = "hutchinson",
    n_probes: int = 1,
    probe: str = "rademacher",
    seed: int | Sequence[int] | torch.Tensor | None = None,
    solver: str = "heun",
    prior: Callable[[torch.Tensor], torch.Tensor] | None = None,
    backend: str = "auto",
    progress: bool | None = False,
    return_info: bool = False,
    check_finite: bool = True,
) -> torch.Tensor | LikelihoodResult:
    """log p_{sigma_min}(x0) per sample, float64 [B], by the probability-flow ODE from sigma_min to sigma_max.

    What it computes: the log-density at noise level sigma_min = min(sigmas) of the data density
    convolved with N(0, sigma_min^2 I), evaluated at x0, i.e. x0 is taken as a point at noise level
    sigma_min (for an exact `fastdiff.toy.GaussianMixture` that is `gm.log_prob(x0, sigma_min)`).

        log p_{sigma_min}(x0) = log p_T(x_T) + int_{sigma_min}^{sigma_max} (d - div_x D(x, sigma)) / sigma dsigma

    - sigmas: the grid, increasing (sigma_min ... sigma_max), or a sampling grid (decreasing, maybe
      ending in 0: it is reversed and the 0 dropped). Every entry is a point where the network runs.
      sigma_max may be +inf (the flow time t = 1): the last step ends on the unit-noise state n, whose
      density is N(0, I) exactly (module docstring). A flow model (`fastdiff.models.FlowDenoiser`) takes
      a flow grid as it is, `get_sigmas("flow", n)`; the result is in the VE convention, log p_{sigma_min}(x0),
      which for the flow marginal at t_min = sigma_min / (1 + sigma_min) reads
      log p_{t_min}(x0 / (1 + sigma_min)) = result + d log(1 + sigma_min).
    - estimator: "exact" (autograd trace, d vector-Jacobian products per evaluation: small d) or
      "hutchinson" (v^T (dD/dx) v averaged over `n_probes` probes, one product each; unbiased, its
      variance falls as 1/n_probes). probe: "rademacher" (+-1) or "gaussian".
    - seed: the probes' per-sample seeds (an int, one int per sample, or an int64 [B] tensor on x0's
      device; None draws one from torch's generator). Probe p of sample b at step i, stage j is a
      fixed function of (its seed, element, i, j, p): it never depends on the batch size.
    - solver: "heun" (2nd order, 2 evaluations per step, default) or "euler" (1).
    - prior: log p_T(x_T) as a callable on [B, ...] -> [B] (with sigma_max = inf, on the unit noise n).
      Default: N(0, I) on n for sigma_max = inf, exact. Else N(0, sigma_max^2 I), exact only as
      sigma_max -> infinity: a data mean mu shifts a sample's value by about <x_T, mu> / sigma_max^2,
      of order |mu| / sigma_max (0.02 nats for |mu| = 4 at sigma_max = 100), the covariance by
      tr(Cov) / (2 sigma_max^2). Pass the exact noised density where it is known, e.g.
      `lambda x: gm.log_prob(x, sigma_max)`.
    - backend: of the fused trace step (`fastdiff.ops.trace_step`), one launch per network evaluation
      that adds the stage's trace estimate to the log-density and moves the state.

    - check_finite: a network output or prior value with NaN or Inf raises `fastdiff.NonFiniteError` at the end,
      naming the first step and sigma where it appeared (flags stay on the device, read once).

    The result carries no autograd graph (the vector-Jacobian products are taken and released inside each step).
    Returns the [B] tensor by default, so the call reads as the log-likelihood itself; with
    `return_info=True` a `LikelihoodResult` that also carries the prior term, the divergence
    integral, x_T and the evaluation counts (`nfe`, `n_vjp`). The state runs in float64 for float64
    x0, else float32; the network sees x0's dtype.
    """
    x0 = check_sample(x0, "x0")
    _check_options(estimator, n_probes, probe, solver)
    if not callable(denoiser):
        raise TypeError(f"denoiser must be callable as denoiser(x, sigma), got {type(denoiser).__name__}")
    grid = increasing_grid(sigmas)
    chosen = resolve_backend(backend, x0.device, SUPPORTED_BACKENDS)
    if prior is not None and not callable(prior):
        raise TypeError(f"prior must be a callable log p_T(x) -> [B], got {type(prior).__name__}")
    batch = x0.shape[0]
    keys = seed_keys(seed, batch, x0.device)  # validated even where the exact estimator draws no probes
    check_flag(check_finite, "check_finite")
    watch = FiniteWatch() if check_finite else None
    state = working_dtype(x0.dtype)
    d = x0[0].numel()
    with torch.no_grad():
        x = x0.to(state)
        total = torch.zeros(batch, dtype=torch.float64, device=x0.device)
        nfe = 0
        for i in progress_range(len(grid) - 1, progress, desc="log-likelihood"):
            s, s_next = grid[i], grid[i + 1]
            stage_sigmas = [s] if solver == "euler" else [s, s_next]
            point, ks = x, []
            for j, (sigma, st) in enumerate(zip(stage_sigmas, _stages(solver, s, s_next, d), strict=True)):
                if estimator == "exact":
                    denoised, div = exact_divergence(denoiser, point, sigma, x0.dtype)
                    ks.append(denoised)
                    out = solver_step(x, ks, st.a, st.bs, backend=chosen)
                    total = total + st.c + st.w * div
                else:
                    v = probes(keys, x.shape, n_probes, i, j, probe, state, chosen)
                    denoised, u = vjp(denoiser, point, sigma, v, x0.dtype)
                    ks.append(denoised)
                    out, total = trace_step(x, ks, st.a, st.bs, u, keys, i, j, probe, total, st.c, st.w, backend=chosen)
                nfe += 1
                if watch is not None:
                    watch.record(point, denoised, i, sigma)
                point = out
                ks.append(out)
            x = point
        unit_scale = 1.0 if math.isinf(grid[-1]) else grid[-1]  # at sigma = inf x is the unit noise
        prior_lp = gaussian_prior(x, unit_scale) if prior is None else _prior(prior, x)
        if watch is not None:
            watch.record(x, prior_lp, len(grid) - 1, grid[-1], "prior")
            watch.check()
    log_prob = prior_lp + total
    if not return_info:
        return log_prob
    per_eval = d if estimator == "exact" else n_probes
    return LikelihoodResult(log_prob, prior_lp, total, x, nfe, nfe * per_eval)


def _prior(prior: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    out = prior(x)
    if not isinstance(out, torch.Tensor) or out.shape != (x.shape[0],):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"prior must return log p_T(x_T) of shape [B] = [{x.shape[0]}], got {got}")
    return out.to(torch.float64)
