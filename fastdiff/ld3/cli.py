"""`python -m fastdiff ld3`: learn a grid on an exact Gaussian-mixture target, compare it with the hand-designed
grids on held-out noise against the exact ODE solution, print the table and write a PNG (and the schedule).

The output paths are checked before training, so that a finished training is not lost to an unwritable path; an
existing schedule file is replaced only with `overwrite=True` (`--overwrite`), and the run says so.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

from fastdiff.ld3.compare import GridError, best_hand_designed, compare
from fastdiff.ld3.plot import plot_grids
from fastdiff.ld3.schedule import LearnedSchedule
from fastdiff.ld3.targets import TARGETS
from fastdiff.ld3.train import SIGMA_MAX, SIGMA_MIN, learn_sigmas


def format_table(rows: list[GridError]) -> str:
    """The comparison as a text table, each grid's RMSE also relative to the learned grid's (the first row)."""
    learned = rows[0]
    header = f"{'grid':<16}{'RMSE':>12}{'sliced W2':>12}{'RMSE / learned':>16}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r.grid:<16}{r.rmse:>12.4g}{r.sliced_w2:>12.4g}{r.rmse / learned.rmse:>16.2f}")
    return "\n".join(lines)


def _writable_dir(path: Path, name: str) -> None:
    """Raise ValueError naming `name` unless `path` is, or can be created as, a writable directory."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{name} {str(path)!r}: {str(existing)!r} exists and is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{name} {str(path)!r}: {str(existing)!r} is not writable")


def check_outputs(out: str | None, plot_dir: str, overwrite: bool = False) -> bool:
    """Check the output paths before any work; True when `out` exists (and, with `overwrite`, will be replaced)."""
    _writable_dir(Path(plot_dir), "--plot-dir")
    if out is None:
        return False
    path = Path(out)
    if path.is_dir():
        raise ValueError(f"--out {out!r} is a directory; give a file name for the schedule")
    parent = path.parent
    if not parent.is_dir():
        raise ValueError(f"--out {out!r}: the directory {str(parent)!r} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"--out {out!r} is not writable")
    if path.exists() and not overwrite:
        raise ValueError(f"--out {out!r} exists; pass --overwrite to replace it, or choose another file")
    return path.exists()


def run_ld3(
    solver: str = "ipndm",
    nfe: int = 4,
    target: str = "mixture_1d",
    teacher: str = "exact",
    teacher_nfe: int = 200,
    n_samples: int = 100,
    eval_samples: int = 2000,
    radius: float | None = None,
    decoupled: bool = True,
    out: str | None = None,
    plot_dir: str = "ld3_output",
    seed: int = 0,
    max_epochs: int = 100,
    distance: str = "l2",
    progress: bool = True,
    overwrite: bool = False,
) -> tuple[LearnedSchedule, list[GridError]]:
    """Learn `solver`'s grid at `nfe` on the exact target `target` (`learn_sigmas` with its default sigma range),
    compare it with the hand-designed grids on `eval_samples` held-out noises (seed + 1), print, save and plot."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    replaces = check_outputs(out, plot_dir, overwrite)
    gm = TARGETS[target]()
    print(
        f"fastdiff ld3: {solver} at NFE {nfe} on {target} (d = {gm.dim}), sigma {SIGMA_MIN}..{SIGMA_MAX}, "
        f"teacher: {'exact ODE map' if teacher == 'exact' else f'{teacher} at NFE {teacher_nfe}'}"
    )
    if replaces:
        print(f"note: {out} exists and will be replaced by the learned schedule")
    start = time.perf_counter()
    schedule = learn_sigmas(
        gm.denoiser,
        solver,
        nfe,
        shape=(gm.dim,),
        teacher_solver=gm.ode_solution if teacher == "exact" else teacher,
        teacher_nfe=teacher_nfe,
        n_samples=n_samples,
        radius=radius,
        decoupled=decoupled,
        seed=seed,
        max_epochs=max_epochs,
        distance=distance,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    gen = torch.Generator().manual_seed(seed + 1)
    x_T = torch.randn(eval_samples, gm.dim, generator=gen, dtype=torch.float64) * schedule.sigma_max
    rows = compare(gm.denoiser, schedule, x_T, gm.ode_solution(x_T, schedule.sigma_max, schedule.sigma_min))
    print(
        f"trained in {seconds:.1f} s ({schedule.config['epochs']} epochs, started from {schedule.config['init']}); "
        f"{schedule.steps} steps, {schedule.evaluations} evaluations"
    )
    print(f"learned sigmas:       {', '.join(f'{s:.4g}' for s in schedule.sigma_list)}")
    if decoupled:
        print(f"learned model sigmas: {', '.join(f'{s:.4g}' for s in schedule.model_sigma_list)}")
    print(f"errors on {eval_samples} held-out noises against the exact ODE solution:")
    print(format_table(rows))
    best = best_hand_designed(rows)
    print(f"learned / best hand-designed ({best.grid}) RMSE: {rows[0].rmse / best.rmse:.3f}")
    if out is not None:
        schedule.save(out)
        print(f"schedule written to {out}" + (" (replaced the existing file)" if replaces else ""))
    path = plot_grids(schedule, rows, Path(plot_dir) / f"ld3_{solver}_nfe{nfe}.png")
    if path is not None:
        print(f"plot written to {path}")
    return schedule, rows
