"""The sampling loop: validation, noise streams, dtype handling, progress and callbacks.

A solver (`fastdiff.solvers`) only knows how to take one step; everything around the steps
lives here, once, for every solver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch

from fastdiff.backends import BACKENDS
from fastdiff.dtypes import working_dtype
from fastdiff.finite_watch import FiniteWatch
from fastdiff.noise import SamplerNoise, device_keys, sample_seeds
from fastdiff.ops.brownian import BrownianNoise, BrownianTreeNoiseSampler
from fastdiff.ops.philox import CounterNoise
from fastdiff.progress import progress_bar
from fastdiff.solvers import StepContext, make_solver
from fastdiff.stepping import Evaluate, solve
from fastdiff.validation import check_flag, check_grid, check_progress, check_sample

Denoiser = Callable[..., torch.Tensor]


class DenoiserCall:
    """D(x, sigma) for the solvers: casts the state to the model's dtype, passes sigma as a
    `[B]` tensor (k-diffusion's `sigma * s_in`) plus `extra_args`, casts the output back, and
    counts evaluations. With a `watch`, every output's finiteness is recorded on the device under the
    current `step` (see `fastdiff.finite_watch`)."""

    def __init__(
        self,
        denoiser: Denoiser,
        model_dtype: torch.dtype,
        extra_args: dict | None,
        watch: FiniteWatch | None = None,
        what: str = "denoiser",
    ):
        if not callable(denoiser):
            raise TypeError(f"denoiser must be callable as denoiser(x, sigma), got {type(denoiser).__name__}")
        if extra_args is not None and not isinstance(extra_args, dict):
            raise TypeError(f"extra_args must be a dict of keyword arguments for the model, got {type(extra_args).__name__}")
        self.denoiser = denoiser
        self.model_dtype = model_dtype
        self.extra_args = extra_args or {}
        self.nfe = 0
        self.step = 0
        self.watch = watch
        self.what = what

    def __call__(self, x: torch.Tensor, sigma: float) -> torch.Tensor:
        sigma_batch = torch.full((x.shape[0],), sigma, dtype=working_dtype(x.dtype), device=x.device)
        model_input = x.to(self.model_dtype)
        out = self.denoiser(model_input, sigma_batch, **self.extra_args)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"denoiser must return a tensor shaped like x {tuple(x.shape)}, got {got}")
        if not out.dtype.is_floating_point:
            raise TypeError(f"denoiser must return a floating-point tensor, got dtype {out.dtype}")
        self.nfe += 1
        if self.watch is not None:
            self.watch.record(model_input, out, self.step, sigma, self.what)
        return out.to(x.dtype)


@runtime_checkable
class Schedule(Protocol):
    """A grid that comes with its own model times and the solver it was made for (`fastdiff.ld3.LearnedSchedule`):
    the solver steps on `solver_grid()` and a request D(x, sigma_i) is answered with D(x, model_sigma_i). Methods only,
    so that `isinstance` stays traceable under torch.compile."""

    def solver_grid(self) -> list[float]:
        """The grid sigma_0 > ... > sigma_N the solver steps on, as host floats."""

    def check_solver(self, solver: str, options: dict) -> None:
        """Raise ValueError unless the grid was made for `solver` with `options`."""

    def at_model_times(self, evaluate: Evaluate) -> Evaluate:
        """`evaluate(x, sigma)` answered at the model time of sigma."""


NOISE_KINDS = ("counter", "brownian")


def noise_source(noise: str, noise_sampler: object, seed: object, x: torch.Tensor, backend: str):
    """The noise of a stochastic run: a user's noise_sampler (a fastdiff `BrownianTreeNoiseSampler` runs fused), else
    the seed's counter stream (`noise="counter"`) or Brownian paths (`noise="brownian"`)."""
    if noise not in NOISE_KINDS:
        raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
    if noise_sampler is not None:
        if noise != "counter":
            raise ValueError(f"give either noise={noise!r} or a noise_sampler, not both")
        if isinstance(noise_sampler, BrownianTreeNoiseSampler) and noise_sampler.shape == tuple(x.shape):
            return noise_sampler.source
        return SamplerNoise(noise_sampler)
    kind = BrownianNoise if noise == "brownian" else CounterNoise
    return kind.from_seed(seed, x.shape[0], x.device, backend)


def sample(
    denoiser: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor | Sequence[float] | Schedule,
    solver: str = "srk",
    *,
    seed: int | Sequence[int] | None = None,
    noise_sampler: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    noise: str = "counter",
    backend: str = "auto",
    callback: Callable[[dict], None] | None = None,
    progress: bool | None = False,
    extra_args: dict | None = None,
    differentiable: bool = False,
    check_finite: bool = True,
    **solver_options,
) -> torch.Tensor:
    """Solve from noise `x` at `sigmas[0]` down the grid `sigmas` with step rule `solver`.

    `x` is `[B, ...]` already scaled to `sigmas[0]` (e.g. `randn * sigmas[0]`); `denoiser(x, sigma)`
    returns D(x, sigma) ~ E[x0 | x] with sigma a `[B]` tensor. `sigmas[0]` may be inf, the flow time t = 1 (a
    rectified-flow model through `fastdiff.models.FlowDenoiser`): then x is the unit noise (`randn`, the flow state x_t
    at t = 1), the denoiser is called with it at sigma = inf, and the first step is x' = D + sigma' (kept x + fresh z)
    with the solver's exact limit (kept, fresh) (docs/ALGORITHMS.md section 14). Stochastic solvers draw from the
    counter stream keyed by `seed` (int: per-sample seeds derived from it; list: one per sample;
    an int64 `[B]` tensor on x's device: the per-sample seeds, read in the kernels without a host
    sync; None: drawn from torch's global generator) unless `noise_sampler(sigma, sigma_next)` is given.
    `noise="brownian"` makes the seed's noise one Brownian path per sample (`fastdiff.ops.brownian`, docs/ALGORITHMS.md
    section 15): a draw depends only on its sigma interval, so changing the step count changes the sample gradually;
    same kernels, no host sync. A `fastdiff.sampling.BrownianTreeNoiseSampler` given as `noise_sampler` is that path.

    Under torch.compile or CUDA graph capture pass `sigmas` as a list of floats (a tensor grid
    is read to the host once) and seeds as an int or a device tensor.
    `callback` gets k-diffusion's dict {'x', 'i', 'sigma', 'sigma_hat', 'denoised'} once per step.
    `sigmas` may be a `Schedule` such as `fastdiff.ld3.LearnedSchedule`: the solver steps on its grid and the denoiser
    is evaluated at its decoupled model times; a schedule learned for another solver or other solver options raises
    ValueError (pass `schedule.sigmas` to run the bare grid anyway).
    The run builds no autograd graph (as k-diffusion's samplers, under `torch.no_grad`) unless `differentiable=True`,
    for gradients through the sampler on purpose. With `check_finite` (the default) a model output with NaN or Inf
    raises `fastdiff.NonFiniteError` after the loop, naming the first step and sigma where it happened: the flags stay
    on the device and are read once at the end, not per step (no check under torch.compile or CUDA graph capture).
    Returns the sample in `x`'s dtype.
    """
    check_flag(differentiable, "differentiable")
    check_flag(check_finite, "check_finite")
    check_sample(x)
    schedule = None
    if isinstance(sigmas, Schedule):
        schedule, sigmas = sigmas, sigmas.solver_grid()
        schedule.check_solver(solver, solver_options)
    work_dtype = working_dtype(x.dtype)
    host_grid, grid = check_grid(sigmas, x.device, dtype=work_dtype)
    check_progress(progress)
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable with a dict, got {type(callback).__name__}")
    rule = make_solver(solver, **solver_options)
    if rule.stochastic and getattr(denoiser, "flow_time_coordinates", False):
        given = f" with {solver_options}" if solver_options else ""
        raise ValueError(f"solver {solver!r}{given} is stochastic: its noise assumes x = x0 + sigma eps, "
                         "which the flow state x_t of a denoiser in flow-time coordinates (FlowTimeDenoiser) is not; use "
                         "FlowDenoiser for stochastic sampling")
    source = None
    if rule.stochastic or noise_sampler is not None:
        source = noise_source(noise, noise_sampler, seed, x, backend)
    elif noise not in NOISE_KINDS:
        raise ValueError(f"noise must be one of {NOISE_KINDS}, got {noise!r}")
    elif seed is not None and device_keys(seed, x.shape[0], x.device) is None:
        sample_seeds(seed, x.shape[0])  # validated even when unused, so a bad seed list never passes silently
    if isinstance(noise_sampler, BrownianTreeNoiseSampler):
        noise_sampler.check_range(host_grid)
    watch = FiniteWatch() if check_finite else None
    evaluate = DenoiserCall(denoiser, x.dtype, extra_args, watch)
    answer = evaluate if schedule is None else schedule.at_model_times(evaluate)
    ctx = StepContext(
        sigmas=host_grid,
        sigmas_tensor=grid.to(work_dtype),
        noise=source,
        backend=backend,
    )
    bar = progress_bar(len(ctx.sigmas) - 1, progress, desc=f"fastdiff {solver}")

    def on_step(i, out):
        evaluate.step = i + 1
        bar.update()
        if callback is not None:
            callback({
                "x": out.x_eval,
                "i": i,
                "sigma": ctx.sigmas_tensor[i],
                "sigma_hat": ctx.sigmas_tensor.new_tensor(out.sigma_hat),
                "denoised": out.denoised,
            })

    with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()), bar:
        state = solve(rule, ctx, x.to(work_dtype), answer, on_step)
    if watch is not None:
        watch.check()
    return state.to(x.dtype)
