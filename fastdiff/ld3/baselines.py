"""Hand-designed grids of the same size and sigma range as a learned one: the baselines LD3 is measured against
and the grids it may start from."""

from __future__ import annotations

from fastdiff.grids import get_sigmas

HAND_DESIGNED = ("karras", "logsnr", "time_uniform", "time_quadratic")


def hand_designed_grid(kind: str, levels: int, sigma_min: float, sigma_max: float, to_zero: bool) -> list[float]:
    """`levels` positive levels of `get_sigmas(kind, ...)` (karras with rho = 7) from sigma_max to sigma_min, then 0
    when `to_zero`."""
    grid = get_sigmas(kind, levels, sigma_min, sigma_max).tolist()
    return grid if to_zero else grid[:-1]
