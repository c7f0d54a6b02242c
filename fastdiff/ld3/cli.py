"""`python -m fastdiff ld3`: learn a grid on an exact Gaussian-mixture target, compare it with the hand-designed
grids on held-out noise against the exact ODE solution, print the table and write a PNG (and the schedule)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from fastdiff.ld3.compare import GridError, best_hand_designed, compare
from fastdiff.ld3.plot import plot_grids
from fastdiff.ld3.schedule import LearnedSchedule
from fastdiff.ld3.targets import TARGETS
from fastdiff.ld3.train import learn_sigmas


def format_table(rows: list[GridError]) -> str:
    learned = rows[0]
    header = f"{'grid':<16}{'RMSE':>12}{'sliced W2':>12}{'RMSE / learned':>16}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r.grid:<16}{r.rmse:>12.4g}{r.sliced_w2:>12.4g}{r.rmse / learned.rmse:>16.2f}")
    return "\n".join(lines)


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
) -> tuple[LearnedSchedule, list[GridError]]:
    gm = TARGETS[target]()
    sigma_min, sigma_max = 0.002, 80.0
    print(
        f"fastdiff ld3: {solver} at NFE {nfe} on {target} (d = {gm.dim}), sigma {sigma_min}..{sigma_max}, "
        f"teacher: {'exact ODE map' if teacher == 'exact' else f'{teacher} at NFE {teacher_nfe}'}"
    )
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
        sigma_min=sigma_min,
        sigma_max=sigma_max,
        seed=seed,
        max_epochs=max_epochs,
        distance=distance,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    gen = torch.Generator().manual_seed(seed + 1)
    x_T = torch.randn(eval_samples, gm.dim, generator=gen, dtype=torch.float64) * sigma_max
    rows = compare(gm.denoiser, schedule, x_T, gm.ode_solution(x_T, sigma_max, sigma_min))
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
        print(f"schedule written to {out}")
    path = plot_grids(schedule, rows, Path(plot_dir) / f"ld3_{solver}_nfe{nfe}.png")
    if path is not None:
        print(f"plot written to {path}")
    return schedule, rows
