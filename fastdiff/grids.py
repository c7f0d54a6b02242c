"""Noise-level grids: strictly decreasing sigmas ending in 0 (k-diffusion convention).

`n` is the number of steps: every grid has `n + 1` entries, `n` positive levels, then 0. The sigma-range kinds
(`GRIDS`) run from `sigma_max` down to `sigma_min`; the flow kind is described in flow-matching time t and mapped by
sigma = t / (1 - t), so its t = 1 start is sigma = inf.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

from fastdiff.flow_time import flow_t_to_sigma, sigma_to_flow_t
from fastdiff.validation import check_flag, check_number, check_positive, check_positive_int


def vp_sigma(t: torch.Tensor, beta_min: float, beta_d: float) -> torch.Tensor:
    """sigma(t) of the linear-beta VP SDE: sqrt(exp(beta_d t^2 / 2 + beta_min t) - 1)."""
    return torch.sqrt(torch.expm1(0.5 * beta_d * t**2 + beta_min * t))


def vp_time(sigma: float | torch.Tensor, beta_min: float, beta_d: float) -> float | torch.Tensor:
    """Inverse of `vp_sigma`: the positive root of beta_d t^2 / 2 + beta_min t = log(1 + sigma^2) (float or tensor)."""
    log1p, sqrt = (torch.log1p, torch.sqrt) if isinstance(sigma, torch.Tensor) else (math.log1p, math.sqrt)
    c = log1p(sigma**2)
    return 2.0 * c / (beta_min + sqrt(beta_min**2 + 2.0 * beta_d * c))


def _karras(n, smin, smax, rho, **_):
    ramp = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    return (smax ** (1 / rho) + ramp * (smin ** (1 / rho) - smax ** (1 / rho))) ** rho


def _logsnr(n, smin, smax, **_):
    return torch.exp(torch.linspace(math.log(smax), math.log(smin), n, dtype=torch.float64))


def _time_power(power):
    def grid(n, smin, smax, beta_min, beta_d, **_):
        t_max, t_min = vp_time(smax, beta_min, beta_d), vp_time(smin, beta_min, beta_d)
        t = torch.linspace(t_max ** (1 / power), t_min ** (1 / power), n, dtype=torch.float64) ** power
        return vp_sigma(t, beta_min, beta_d)

    return grid


GRIDS = {
    "karras": _karras,
    "logsnr": _logsnr,
    "exponential": _logsnr,
    "time_uniform": _time_power(1),
    "time_quadratic": _time_power(2),
}

FLOW = "flow"
KINDS = (*GRIDS, FLOW)
TIME_SHIFT_TYPES = ("exponential", "linear")
DIFFUSERS_T_MIN = 1 / 1000  # FlowMatchEulerDiscreteScheduler's last training time, 1 / num_train_timesteps (1000)


def _flow_time(value, name, allow_one, hint=""):
    """A flow time in (0, 1] (`allow_one`) or (0, 1)."""
    interval = "(0, 1]" if allow_one else "(0, 1)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (0 < value < 1 or (allow_one and value == 1)):
        raise ValueError(f"{name} must be a number in {interval}{hint}, got {value!r}")
    return float(value)


def _shift_factor(shift, mu, time_shift_type):
    """Every shift scales sigma = t / (1 - t): shift t / (1 + (shift - 1) t) is sigma -> shift sigma,
    e^mu / (e^mu + 1/t - 1) is sigma -> e^mu sigma, mu / (mu + 1/t - 1) is sigma -> mu sigma."""
    if time_shift_type not in TIME_SHIFT_TYPES:
        raise ValueError(f"time_shift_type must be one of {TIME_SHIFT_TYPES}, got {time_shift_type!r}")
    if mu is None:
        if time_shift_type != "exponential":
            raise ValueError(f"time_shift_type={time_shift_type!r} shapes the dynamic shift: pass mu too, got mu=None")
        return 1.0 if shift is None else check_positive(shift, "shift")
    if shift is not None:
        raise ValueError(
            f"shift (static) and mu (dynamic) exclude each other (diffusers ignores shift under use_dynamic_shifting): "
            f"pass one, got shift={shift!r}, mu={mu!r}"
        )
    if time_shift_type == "linear":
        return check_positive(mu, "mu")
    return math.exp(check_number(mu, "mu", low=-700.0, high=700.0))


def _uniform_times(n, t_max, t_min, shift):
    """n times uniform from t_max (default 1) to t_min (default diffusers' end: 1/1000 through the static shift)."""
    t_max = 1.0 if t_max is None else _flow_time(t_max, "t_max", allow_one=True)
    if t_min is None:
        t_min = DIFFUSERS_T_MIN if shift is None else sigma_to_flow_t(shift * flow_t_to_sigma(DIFFUSERS_T_MIN))
    else:
        t_min = _flow_time(t_min, "t_min", allow_one=False, hint=" (0 is appended; t_min = t_max / n spaces evenly to it)")
    if n > 1 and not t_min < t_max:
        raise ValueError(f"t_min must be < t_max, got t_min={t_min}, t_max={t_max}")
    return torch.linspace(t_max, t_min, n, dtype=torch.float64)


def _base_times(base, n, t_max, t_min):
    """A pipeline's own base grid: n times, strictly decreasing in (0, 1]."""
    if t_max is not None or t_min is not None:
        raise ValueError(f"base replaces the uniform grid from t_max to t_min: pass either, got t_max={t_max}, t_min={t_min}")
    try:
        t = torch.as_tensor(base, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"base must be a sequence of flow times, got {type(base).__name__}") from None
    if t.shape != (n,):
        raise ValueError(f"base must hold n = {n} flow times (one level per step), got shape {tuple(t.shape)}")
    t = t.detach().cpu()
    if not bool(((t > 0) & (t <= 1)).all()) or not bool((t[1:] < t[:-1]).all()):
        raise ValueError(f"base must be strictly decreasing in (0, 1], got {t.tolist()}")
    return t


def _stretch_to_terminal(sigmas, shift_terminal):
    """1 - t -> (1 - t) (1 - shift_terminal) / (1 - t_last): the last level lands on t = shift_terminal, t = 1 stays."""
    if isinstance(shift_terminal, bool) or not isinstance(shift_terminal, numbers.Real) or not 0 < shift_terminal < 1:
        raise ValueError(f"shift_terminal must be a number in (0, 1), got {shift_terminal!r}")
    one_minus_t = 1 / (1 + sigmas)
    if one_minus_t[-1] == 0:
        raise ValueError("shift_terminal needs a last level below t = 1, got a one-step grid at t = 1")
    return flow_t_to_sigma(1 - one_minus_t * ((1 - float(shift_terminal)) / one_minus_t[-1]))


def _flow(n, t_max, t_min, base, shift, mu, time_shift_type, shift_terminal):
    """diffusers' FlowMatchEulerDiscreteScheduler.set_timesteps in sigma = t / (1 - t), computed in float64."""
    factor = _shift_factor(shift, mu, time_shift_type)
    t = _uniform_times(n, t_max, t_min, shift) if base is None else _base_times(base, n, t_max, t_min)
    levels = flow_t_to_sigma(t) * factor
    if shift_terminal is not None:
        levels = _stretch_to_terminal(levels, shift_terminal)
    if not bool((levels > 0).all()) or not bool((levels[1:] < levels[:-1]).all()):
        raise ValueError(
            f"the flow grid collapses in float64 (levels no longer distinct and positive): shift={shift}, mu={mu} is too extreme"
        )
    return levels


def _sigma_range(kind, n, sigma_min, sigma_max, rho, beta_min, beta_d):
    if sigma_min is None or sigma_max is None:
        raise ValueError(f"kind={kind!r} needs sigma_min and sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    check_positive(sigma_min, "sigma_min")
    check_positive(sigma_max, "sigma_max")
    if n > 1 and not sigma_min < sigma_max:
        raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    check_number(rho, "rho", low=1e-3)
    check_number(beta_min, "beta_min", low=1e-6)
    check_number(beta_d, "beta_d")
    if n == 1:
        return torch.tensor([float(sigma_max)], dtype=torch.float64)
    return GRIDS[kind](n, float(sigma_min), float(sigma_max), rho=rho, beta_min=beta_min, beta_d=beta_d)


def get_sigmas(
    kind: str,
    n: int,
    sigma_min: float | None = None,
    sigma_max: float | None = None,
    *,
    rho: float = 7.0,
    beta_min: float = 0.1,
    beta_d: float = 19.9,
    t_max: float | None = None,
    t_min: float | None = None,
    base: Sequence[float] | torch.Tensor | None = None,
    shift: float | None = None,
    mu: float | None = None,
    time_shift_type: str = "exponential",
    shift_terminal: float | None = None,
    from_infinity: bool = False,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """A grid of `n` steps, then 0.

    Kinds from `sigma_max` to `sigma_min`: "karras" (EDM, `rho`), "logsnr" / "exponential" (uniform in log sigma),
    "time_uniform" / "time_quadratic" (uniform / quadratic in the time of the linear-beta VP SDE with `beta_min`,
    `beta_d`, DPM-Solver's skip types). `from_infinity=True` (for a flow model, whose sampling starts from the pure
    noise at t = 1) puts sigma = inf first and the kind's n - 1 levels from `sigma_max` to `sigma_min` after it: the
    first step goes from the unit noise to sigma_max. On the flow targets of bench/SHOOTOUT.md,
    `get_sigmas("logsnr", n, 0.002, 80.0, from_infinity=True)` beats the shifted "flow" grid for most samplers.

    "flow": a rectified-flow grid (x_t = (1 - t) x0 + t eps), described in t, no sigma_min / sigma_max; diffusers'
    FlowMatchEulerDiscreteScheduler.set_timesteps(n, sigmas=base, mu=mu) in sigma = t / (1 - t), t = 1 as sigma = inf:
    1. n times uniform from `t_max` (default 1) to `t_min`, or a pipeline's own `base` (n times, diffusers' `sigmas=`);
    2. a static `shift` (t -> shift t / (1 + (shift - 1) t), i.e. sigma -> shift sigma; SD3: 3) or a dynamic `mu`
       (use_dynamic_shifting; `time_shift_type` "exponential": t -> e^mu / (e^mu + 1/t - 1), sigma -> e^mu sigma;
       "linear": t -> mu / (mu + 1/t - 1), sigma -> mu sigma), not both;
    3. `shift_terminal`: 1 - t -> (1 - t) (1 - shift_terminal) / (1 - t_last), so the last level is t = shift_terminal.
    `t_min` defaults to diffusers' end, 1/1000, passed through the static `shift` as the scheduler does (it shifts its
    training grid at construction and spaces the inference grid down to that shifted end, then shifts again): with
    `shift` and the default `t_min` the last t is shift(shift(1/1000)) (0.00893 at shift 3), and `shift_terminal`
    stretches from that end; with `mu` or an explicit `t_min` the end is shifted once. Computed in float64 (diffusers
    returns float32, so its grids agree to float32 rounding) and from t = 1 exactly (diffusers' shift < 1 grids start a
    float32 rounding below it).

    Example, Flux at 1024 x 1024 (base 1, (n-1)/n, ..., 1/n; mu = 1.15 from the pipeline's calculate_shift) and SD3::

        flux = fastdiff.get_sigmas("flow", 28, t_min=1 / 28, mu=1.15)  # or base=numpy.linspace(1, 1 / 28, 28)
        sd3 = fastdiff.get_sigmas("flow", 28, shift=3.0)
        # flux[0] == sd3[0] == inf: the sample starts as x = torch.randn(...), the unit noise x_t at t = 1
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {sorted(KINDS)}, got {kind!r}")
    check_positive_int(n, "n")
    check_flag(from_infinity, "from_infinity")
    if kind == FLOW:
        if from_infinity:
            raise ValueError("from_infinity applies to the sigma-range kinds; a flow grid starts at t = 1 (sigma = inf) already")
        if sigma_min is not None or sigma_max is not None:
            raise ValueError(
                f"a flow grid is described in t (t_max, t_min or base): got sigma_min={sigma_min}, sigma_max={sigma_max}"
            )
        levels = _flow(n, t_max, t_min, base, shift, mu, time_shift_type, shift_terminal)
    else:
        flow_options = {"t_max": t_max, "t_min": t_min, "base": base, "shift": shift, "mu": mu, "shift_terminal": shift_terminal}
        given = [name for name, value in flow_options.items() if value is not None]
        given += ["time_shift_type"] if time_shift_type != "exponential" else []
        if given:
            raise ValueError(f"{', '.join(given)} apply only to kind='flow', got kind={kind!r}")
        if from_infinity and n == 1:
            levels = torch.tensor([math.inf], dtype=torch.float64)
        elif from_infinity:
            levels = torch.cat([torch.tensor([math.inf], dtype=torch.float64),
                                _sigma_range(kind, n - 1, sigma_min, sigma_max, rho, beta_min, beta_d)])
        else:
            levels = _sigma_range(kind, n, sigma_min, sigma_max, rho, beta_min, beta_d)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype (sigmas are not integers), got {dtype}")
    return torch.cat([levels, levels.new_zeros(1)]).to(device=device, dtype=dtype)
