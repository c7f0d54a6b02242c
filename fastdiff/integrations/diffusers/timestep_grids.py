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

from fastdiff.grids import get_sigmas
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
