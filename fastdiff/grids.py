"""Noise-level grids: strictly decreasing sigmas ending in 0 (k-diffusion convention).

`n` is the number of steps: every grid has `n + 1` entries, `n` positive levels from
`sigma_max` down to `sigma_min`, then 0.
"""

from __future__ import annotations

import math

import torch

from fastdiff.validation import check_number, check_positive, check_positive_int


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


def get_sigmas(
    kind: str,
    n: int,
    sigma_min: float,
    sigma_max: float,
    *,
    rho: float = 7.0,
    beta_min: float = 0.1,
    beta_d: float = 19.9,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """A grid of `n` steps from `sigma_max` to `sigma_min`, then 0.

    kinds: "karras" (EDM, `rho`), "logsnr" / "exponential" (uniform in log sigma),
    "time_uniform" / "time_quadratic" (uniform / quadratic in the time of the linear-beta VP SDE
    with `beta_min`, `beta_d`, DPM-Solver's skip types).
    """
    if kind not in GRIDS:
        raise ValueError(f"kind must be one of {sorted(GRIDS)}, got {kind!r}")
    check_positive_int(n, "n")
    check_positive(sigma_min, "sigma_min")
    check_positive(sigma_max, "sigma_max")
    if n > 1 and not sigma_min < sigma_max:
        raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    check_number(rho, "rho", low=1e-3)
    check_number(beta_min, "beta_min", low=1e-6)
    check_number(beta_d, "beta_d")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype (sigmas are not integers), got {dtype}")
    if n == 1:
        levels = torch.tensor([float(sigma_max)], dtype=torch.float64)
    else:
        levels = GRIDS[kind](n, float(sigma_min), float(sigma_max), rho=rho, beta_min=beta_min, beta_d=beta_d)
    return torch.cat([levels, levels.new_zeros(1)]).to(device=device, dtype=dtype)
