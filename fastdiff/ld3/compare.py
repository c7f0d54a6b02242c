"""Learned vs hand-designed grids on held-out noise, against the exact ODE solution.

Errors: RMSE = sqrt(mean squared error per coordinate) to the exact map of the same noise, and the sliced
2-Wasserstein distance between the solver's outputs and the exact outputs (a distributional distance; in 1-D it is
W2 itself). Hand-designed grids share the learned grid's steps and endpoints: `get_sigmas(kind, ...)` with the same
number of levels from sigma_max to sigma_min (then 0 when the schedule has `to_zero`), `fastdiff.ld3.baselines`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fastdiff.ld3.baselines import HAND_DESIGNED, hand_designed_grid
from fastdiff.ld3.network import NetworkCall
from fastdiff.ld3.schedule import LearnedSchedule
from fastdiff.ld3.solve import solve
from fastdiff.ld3.solvers import resolve_solver
from fastdiff.metrics import sliced_wasserstein


@dataclass
class GridError:
    """One grid's errors against the exact solution: RMSE over all elements and the sliced Wasserstein-2 distance."""

    grid: str
    rmse: float
    sliced_w2: float


def hand_designed_sigmas(kind: str, schedule: LearnedSchedule) -> list[float]:
    """The hand-designed grid `kind` with the schedule's levels and sigma range."""
    levels = schedule.steps if schedule.to_zero else schedule.steps + 1
    return hand_designed_grid(kind, levels, schedule.sigma_min, schedule.sigma_max, schedule.to_zero)


def grid_error(
    denoiser: Callable, schedule: LearnedSchedule, sigmas, model_sigmas, x_T: torch.Tensor, exact: torch.Tensor, name: str
) -> GridError:
    """The errors of `schedule.solver` from x_T down `sigmas` (the network at `model_sigmas` where given)."""
    options = resolve_solver(schedule.solver, schedule.solver_options)
    with torch.no_grad():
        out = solve(NetworkCall(denoiser), schedule.solver, options, sigmas, x_T, model_sigmas, backend="auto")
    err = (out - exact).double()
    rmse = float(err.pow(2).mean().sqrt())
    return GridError(name, rmse, sliced_wasserstein(out.flatten(1), exact.flatten(1)))


def compare(denoiser: Callable, schedule: LearnedSchedule, x_T: torch.Tensor, exact: torch.Tensor) -> list[GridError]:
    """[learned, karras, logsnr, time_uniform, time_quadratic] errors of `schedule.solver` on `x_T`."""
    rows = [grid_error(denoiser, schedule, schedule.sigma_list, schedule.model_sigma_list, x_T, exact, "learned")]
    for kind in HAND_DESIGNED:
        rows.append(grid_error(denoiser, schedule, hand_designed_sigmas(kind, schedule), None, x_T, exact, kind))
    return rows


def best_hand_designed(rows: list[GridError]) -> GridError:
    """The hand-designed row with the smallest RMSE."""
    return min((r for r in rows if r.grid != "learned"), key=lambda r: r.rmse)
