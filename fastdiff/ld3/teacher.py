"""Teacher pairs (x_T, Psi*(x_T)): the high-accuracy solution the student learns to match.

`teacher` is a solver name (a fine solve of `teacher_nfe` evaluations on a Karras grid over the same sigma range,
ending where the student ends), or a callable `teacher(x, sigma_from, sigma_to)` giving the exact map, e.g.
`fastdiff.toy.GaussianMixture.ode_solution`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fastdiff.grids import get_sigmas
from fastdiff.ld3.network import NetworkCall
from fastdiff.ld3.solve import solve
from fastdiff.ld3.solvers import learnable_solvers, resolve_solver, steps_for_nfe

Teacher = str | Callable[[torch.Tensor, float, float], torch.Tensor]


def check_teacher(teacher: Teacher, teacher_nfe: int, sigma_min: float, sigma_max: float, to_zero: bool) -> list[float] | None:
    """The teacher's grid (None for a callable teacher); raises, naming teacher_solver or teacher_nfe, unless `teacher`
    is an ODE solver name that `teacher_nfe` evaluations can run for at least one step, or a callable."""
    if isinstance(teacher, str):
        if teacher not in learnable_solvers():
            odes = ", ".join(learnable_solvers())
            raise ValueError(f"teacher_solver must be an ODE solver ({odes}) or a callable, got {teacher!r}")
        return teacher_grid(teacher, teacher_nfe, sigma_min, sigma_max, to_zero)
    if not callable(teacher):
        raise TypeError(
            f"teacher_solver must be a solver name or a callable (x, sigma_from, sigma_to), got {type(teacher).__name__}"
        )
    return None


def teacher_grid(solver: str, nfe: int, sigma_min: float, sigma_max: float, to_zero: bool) -> list[float]:
    """A Karras grid of as many steps of `solver` as `nfe` evaluations allow (raises naming teacher_nfe)."""
    try:
        steps, _ = steps_for_nfe(solver, resolve_solver(solver), nfe, to_zero)
    except (TypeError, ValueError) as err:
        raise type(err)(f"teacher_nfe={nfe!r} does not fit teacher_solver {solver!r}: {err}") from err
    levels = get_sigmas("karras", steps if to_zero else steps + 1, sigma_min, sigma_max).tolist()
    return levels if to_zero else levels[:-1]


def describe_teacher(teacher: Teacher, teacher_nfe: int) -> str:
    if isinstance(teacher, str):
        return f"{teacher}, NFE {teacher_nfe}, karras grid"
    return f"exact map {getattr(teacher, '__qualname__', type(teacher).__name__)}"


@torch.no_grad()
def teacher_outputs(
    teacher: Teacher,
    teacher_nfe: int,
    network: NetworkCall,
    x_T: torch.Tensor,
    sigma_min: float,
    sigma_max: float,
    to_zero: bool,
    backend: str = "auto",
) -> torch.Tensor:
    """Psi*(x_T) at the student's final level (sigma_min, or 0 with `to_zero`); raises if any is not finite."""
    grid = check_teacher(teacher, teacher_nfe, sigma_min, sigma_max, to_zero)
    if grid is not None:
        out = solve(network, teacher, {}, grid, x_T, backend=backend)
    else:
        out = teacher(x_T, sigma_max, 0.0 if to_zero else sigma_min)
        if not isinstance(out, torch.Tensor) or out.shape != x_T.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"teacher_solver must return a tensor shaped like x_T {tuple(x_T.shape)}, got {got}")
        out = out.to(x_T.dtype)
    if not bool(torch.isfinite(out).all()):
        raise ValueError("the teacher produced NaN or Inf outputs; no schedule can be learned from them")
    return out
