"""The solver's grid (VE sigmas, strictly decreasing, ending in 0) for a run of a diffusers scheduler.

Where the grid comes from:
- `schedule="discrete"`: the training timesteps picked by diffusers' `timestep_spacing` ("linspace", "leading",
  "trailing"), placed as DPMSolverMultistepScheduler places them, at their exact table sigmas;
- `schedule` one of fastdiff's kinds: "karras" (rho), "logsnr" / "exponential" (uniform in log sigma) through
  `fastdiff.get_sigmas`, and "time_uniform" / "time_quadratic": uniform / quadratic in the model's own (fractional)
  training timestep, exact for every beta schedule; all between `sigma_max` and `sigma_min`, by default the
  table's range;
- `schedule="learned"`: the sigmas stored in `sigmas_file`; an LD3 schedule file (`fastdiff.ld3.LearnedSchedule.save`)
  also brings its decoupled model times, and must have been learned for the scheduler's solver;
- or explicit `sigmas` / `timesteps` handed to `set_timesteps`.

A flow config (`flow_table`) has its own grids (`flow_grid`), in flow time t, sigma = t / (1 - t), starting at t = 1
(sigma = inf) unless said otherwise:
- `schedule="discrete"`: FlowMatchEulerDiscreteScheduler's (`fastdiff.get_sigmas("flow", ...)`): n times uniform from
  1 down to 1/N (N = num_train_timesteps), or the pipeline's own base grid (`set_timesteps(sigmas=...)`, Flux), then
  the static `shift` or, with `use_dynamic_shifting`, the pipeline's `mu` (`time_shift_type`), then `shift_terminal`;
  `use_karras_sigmas` / `use_exponential_sigmas` then respace in t between the grid's ends, as diffusers does. Without
  a base grid diffusers spaces down to shift(1/N), its training grid's shifted end, and shifts again (diffusers issue
  #13243, open): the static shift acts twice on the end (t = 0.00893 for shift 3, N = 1000; `shift_terminal` then
  stretches from that end). fastdiff keeps that grid, so that a pipeline gives the images of its own scheduler; pass
  `sigmas=` (the base grid, shifted once) for the other. With `use_flow_sigmas` (DPMSolverMultistepScheduler's flow
  grid) the base is n of the n + 1 times uniform from 1 - 1/N to 0, shifted by `flow_shift` (by e^mu with dynamic
  shifting), so it starts below t = 1;
- `schedule` "time_uniform" / "time_quadratic": uniform / quadratic in t from t(sigma_max) (default 1) to
  t(sigma_min) (default 1/N); "karras", "logsnr", "exponential" between sigma_min (default that of t = 1/N) and a
  finite `sigma_max`, which they need;
- `timesteps` handed to `set_timesteps`: the model times N t themselves (no shift).

The grid's last level follows diffusers' `final_sigmas_type`: "zero" (default) ends with a step to 0, the denoising
step x = D; "sigma_min" stops there instead: a discrete or `timesteps` grid of n steps then ends at the table's
sigma_min (diffusers' last level), as does a named schedule (its n levels, then the table's sigma_min unless they
end there already, as DPMSolverMultistepScheduler does), and given sigmas stop at their last entry.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import numpy as np
import torch

from fastdiff.flow_time import flow_t_to_sigma, sigma_to_flow_t
from fastdiff.grids import get_sigmas
from fastdiff.integrations.diffusers.flow_table import FlowTable
from fastdiff.integrations.diffusers.vp_table import VPTable
from fastdiff.ld3.schedule import FORMAT as SCHEDULE_FORMAT
from fastdiff.ld3.schedule import LearnedSchedule
from fastdiff.validation import check_positive_int, check_sigmas

TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")
SCHEDULES = ("discrete", "karras", "logsnr", "exponential", "time_uniform", "time_quadratic", "learned")
_TIME_POWERS = {"time_uniform": 1, "time_quadratic": 2}


def spaced_timesteps(n: int, num_train_timesteps: int, spacing: str, steps_offset: int = 0) -> np.ndarray:
    """n training timesteps, decreasing, as DPMSolverMultistepScheduler spaces them (rounding may merge a few when
    n is close to num_train_timesteps; duplicates are dropped)."""
    check_positive_int(n, "num_inference_steps")
    T = num_train_timesteps
    if spacing == "linspace":
        t = np.linspace(0, T - 1, n + 1).round()[::-1][:-1]
    elif spacing == "leading":
        ratio = T // (n + 1)
        if ratio == 0:
            raise ValueError(f"timestep_spacing='leading' needs num_inference_steps < num_train_timesteps={T}, got {n}")
        t = (np.arange(0, n + 1) * ratio).round()[::-1][:-1] + steps_offset
    elif spacing == "trailing":
        t = np.arange(T, 0, -T / n).round() - 1
    else:
        raise ValueError(f"timestep_spacing must be one of {TIMESTEP_SPACINGS}, got {spacing!r}")
    t = np.unique(t.astype(np.int64))[::-1]
    if t[0] > T - 1 or t[-1] < 0:
        raise ValueError(f"timesteps {t[-1]}..{t[0]} leave [0, {T - 1}]; check steps_offset={steps_offset}")
    return t


def schedule_grid(
    table: VPTable,
    n: int,
    schedule: str,
    *,
    timestep_spacing: str = "linspace",
    steps_offset: int = 0,
    rho: float = 7.0,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    to_zero: bool = True,
) -> list[float]:
    """The grid of a named schedule (not "learned"): its n levels as host floats, then 0 when `to_zero`, else the
    table's sigma_min unless the levels end there already."""
    check_positive_int(n, "num_inference_steps")
    levels = _schedule_levels(table, n, schedule, timestep_spacing, steps_offset, rho, sigma_min, sigma_max)
    if to_zero:
        return [*levels, 0.0]
    return levels if levels[-1] <= table.sigma_min * (1 + 1e-9) else [*levels, table.sigma_min]


def _schedule_levels(
    table: VPTable,
    n: int,
    schedule: str,
    timestep_spacing: str,
    steps_offset: int,
    rho: float,
    sigma_min: float | None,
    sigma_max: float | None,
) -> list[float]:
    """The n positive levels of a named schedule, decreasing."""
    if schedule == "discrete":
        t = spaced_timesteps(n, table.num_train_timesteps, timestep_spacing, steps_offset)
        return table.sigmas[torch.from_numpy(t.copy())].tolist()
    smin = table.sigma_min if sigma_min is None else float(sigma_min)
    smax = table.sigma_max if sigma_max is None else float(sigma_max)
    if schedule in _TIME_POWERS:
        power = _TIME_POWERS[schedule]
        t_max, t_min = table.timesteps_of([smax, smin])
        ramp = np.linspace(0.0, 1.0, n)
        t = (t_max ** (1 / power) + ramp * (t_min ** (1 / power) - t_max ** (1 / power))) ** power
        return table.sigmas_at(torch.from_numpy(t)).tolist()
    if schedule in ("karras", "logsnr", "exponential"):
        return get_sigmas(schedule, n, smin, smax, rho=rho).tolist()[:-1]
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def grid_from_sigmas(table: VPTable, sigmas: object, name: str = "sigmas", to_zero: bool = True) -> list[float]:
    """A user's decreasing sigmas (VE, diffusers' `sigmas` argument); a final 0 is appended when missing and `to_zero`."""
    if isinstance(sigmas, torch.Tensor):
        sigmas = sigmas.detach().to("cpu", torch.float64).reshape(-1).tolist()
    elif isinstance(sigmas, np.ndarray):
        sigmas = sigmas.astype(np.float64).reshape(-1).tolist()
    if to_zero and isinstance(sigmas, Sequence) and not isinstance(sigmas, str) and len(sigmas) > 0 and sigmas[-1] != 0:
        sigmas = [*sigmas, 0.0]
    grid = check_sigmas(sigmas, torch.device("cpu"), name).tolist()
    table.check_sigma_range(grid, name)
    return grid


def grid_from_timesteps(table: VPTable, timesteps: object, to_zero: bool = True) -> list[float]:
    """Grid points at given (possibly fractional) training timesteps, decreasing, then 0 (or, not `to_zero`, the
    table's sigma_min unless the last timestep is 0)."""
    t = torch.as_tensor(np.asarray(timesteps, dtype=np.float64)).reshape(-1)
    last = table.num_train_timesteps - 1
    if t.numel() < 1 or not bool(torch.isfinite(t).all()) or not bool(((t >= 0) & (t <= last)).all()):
        raise ValueError(f"timesteps must be finite numbers in [0, {last}], got {t.tolist()}")
    if not bool((t[1:] < t[:-1]).all()):
        raise ValueError(f"timesteps must be strictly decreasing, got {t.tolist()}")
    levels = table.sigmas_at(t).tolist()
    if to_zero:
        return [*levels, 0.0]
    return levels if t[-1] == 0 else [*levels, table.sigma_min]


def load_sigmas_file(path: str | os.PathLike) -> list[float] | LearnedSchedule:
    """Sigmas stored in a file: JSON (a list, an object with a "sigmas" list, or an LD3 schedule, returned validated as
    a `LearnedSchedule`) or a torch file (`torch.save` of a 1-D tensor or of a dict with a "sigmas" tensor),
    decreasing; the final 0 may be omitted."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"sigmas_file must be a path (str), got {type(path).__name__}")
    if not os.path.isfile(path):
        raise ValueError(f"sigmas_file {os.fspath(path)!r} does not exist")
    if os.fspath(path).endswith(".json"):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    else:
        data = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(data, dict) and data.get("format") == SCHEDULE_FORMAT:
        return LearnedSchedule.from_dict(data, f"sigmas_file {os.fspath(path)!r}")
    if isinstance(data, dict):
        if "sigmas" not in data:
            raise ValueError(f"sigmas_file {os.fspath(path)!r} holds a dict without a 'sigmas' entry (keys: {sorted(data)})")
        data = data["sigmas"]
    levels = data.tolist() if isinstance(data, torch.Tensor) else data
    if not isinstance(levels, list) or not all(isinstance(s, (int, float)) and math.isfinite(s) for s in levels):
        raise ValueError(f"sigmas_file {os.fspath(path)!r} must hold a 1-D list of finite numbers")
    return levels


def _static_shift(t: float, shift: float) -> float:
    """shift t / (1 + (shift - 1) t): sigma -> shift sigma."""
    return shift * t / (1 + (shift - 1) * t)


def flow_grid(
    table: FlowTable, n: int | None, config, mu: float | None = None, base: object = None, to_zero: bool = True
) -> list[float]:
    """The grid of a flow config's named schedule (see the module docstring) as host floats: n levels (len(base)
    with a pipeline's base grid), then 0 when `to_zero`."""
    c, N = config, table.num_train_timesteps
    if c.schedule != "discrete":
        if base is not None:
            raise ValueError(f"sigmas (a flow pipeline's base grid) apply to schedule='discrete', got schedule={c.schedule!r}")
        levels = _flow_named_levels(table, check_positive_int(n, "num_inference_steps"), c)
    else:
        if c.use_dynamic_shifting and mu is None:
            raise ValueError("mu must be passed to set_timesteps when use_dynamic_shifting=True (the pipeline computes it)")
        shift = c.flow_shift if c.use_flow_sigmas else c.shift
        shift_kw = {"mu": mu, "time_shift_type": c.time_shift_type} if c.use_dynamic_shifting else {"shift": shift}
        if base is not None:
            t = np.asarray(base.detach().cpu() if isinstance(base, torch.Tensor) else base, dtype=np.float64).reshape(-1)
            n = int(t.size)
            spacing = {"base": t}
        elif c.use_flow_sigmas:
            spacing = {"base": np.linspace(1 - 1 / N, 0, check_positive_int(n, "num_inference_steps") + 1)[:-1]}
        else:
            t_min = 1 / N if c.use_dynamic_shifting else _static_shift(1 / N, shift)
            spacing = {"t_min": t_min}
        sigmas = get_sigmas("flow", n, **spacing, **shift_kw, shift_terminal=c.shift_terminal)[:-1]
        levels = sigmas.tolist()
        if c.use_karras_sigmas or c.use_exponential_sigmas:
            t_hi, t_lo = sigma_to_flow_t(levels[0]), sigma_to_flow_t(levels[-1])
            kind = "karras" if c.use_karras_sigmas else "exponential"
            t = get_sigmas(kind, n, t_lo, t_hi, rho=c.rho)[:-1] if n > 1 else torch.tensor([t_hi], dtype=torch.float64)
            levels = [flow_t_to_sigma(float(x)) for x in t]
    return [*levels, 0.0] if to_zero else levels


def _flow_named_levels(table: FlowTable, n: int, c) -> list[float]:
    """n levels of one of fastdiff's schedules on a flow model."""
    smin = table.sigma_min if c.sigma_min is None else float(c.sigma_min)
    if c.schedule in _TIME_POWERS:
        power = _TIME_POWERS[c.schedule]
        t_max = 1.0 if c.sigma_max is None else sigma_to_flow_t(float(c.sigma_max))
        t_min = sigma_to_flow_t(smin)
        ramp = np.linspace(0.0, 1.0, n)
        t = (t_max ** (1 / power) + ramp * (t_min ** (1 / power) - t_max ** (1 / power))) ** power
        return [flow_t_to_sigma(float(x)) for x in t]
    if c.schedule in ("karras", "logsnr", "exponential"):
        if c.sigma_max is None:
            raise ValueError(
                f"schedule={c.schedule!r} on a flow model needs a finite sigma_max (its first level; the flow grid's own "
                "first level, t = 1, is sigma = inf), got sigma_max=None"
            )
        return get_sigmas(c.schedule, n, smin, float(c.sigma_max), rho=c.rho).tolist()[:-1]
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {c.schedule!r}")


def flow_grid_from_timesteps(table: FlowTable, timesteps: object, to_zero: bool = True) -> list[float]:
    """Grid points at given model timesteps N t in (0, N], decreasing (the model is evaluated there), then 0."""
    t = np.asarray(timesteps.detach().cpu() if isinstance(timesteps, torch.Tensor) else timesteps, dtype=np.float64)
    t = t.reshape(-1)
    N = table.num_train_timesteps
    if t.size < 1 or not np.all(np.isfinite(t)) or not np.all((t > 0) & (t <= N)):
        raise ValueError(f"timesteps must be numbers in (0, {N}], got {t.tolist()}")
    if not np.all(t[1:] < t[:-1]):
        raise ValueError(f"timesteps must be strictly decreasing, got {t.tolist()}")
    levels = [flow_t_to_sigma(float(x) / N) for x in t]
    return [*levels, 0.0] if to_zero else levels
