"""`python -m fastdiff demo`: every solver on an exact 2-D Gaussian mixture at several NFE budgets.

For each solver and budget it picks the largest number of steps whose network evaluations fit
the budget, samples, and measures the error against the exact distribution: sliced W2 and energy
distance to exact samples, and the NLL gap E_p[-log q] - E_q[-log q] under the exact density q.
Each solver runs on its family's recommended grid (`RECOMMENDED_GRIDS`: logsnr for both; in bench/SHOOTOUT.md the
best fastdiff SDE sampler runs on logsnr at every NFE, the best ODE one at every NFE but 12) unless one grid is asked
for. `fastdiff.recommend` names the measured best solver and grid per NFE.
Prints a table, writes PNGs of error vs NFE and of the samples at NFE 20, and says which backend ran.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch

from fastdiff.backends import resolve_backend
from fastdiff.driver import sample
from fastdiff.grids import get_sigmas
from fastdiff.metrics import energy_distance, sliced_wasserstein
from fastdiff.progress import progress_range
from fastdiff.solvers import SOLVERS, make_solver
from fastdiff.stepping import evaluation_plan
from fastdiff.toy import GaussianMixture

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
RECOMMENDED_GRIDS = {"ode": "logsnr", "sde": "logsnr"}
# The sample scatters show this budget (or the nearest one run below it): where the recommended samplers work.
SAMPLES_BUDGET = 20


def grid_for(solver: str, grid_kind: str) -> str:
    """`grid_kind` itself, or with "recommended" the grid of the solver's family."""
    if grid_kind != "recommended":
        return grid_kind
    return RECOMMENDED_GRIDS["sde" if make_solver(solver).stochastic else "ode"]


@dataclass
class DemoRow:
    solver: str
    grid: str
    nfe_budget: int
    nfe: int
    steps: int
    sliced_w2: float
    energy: float
    nll_gap: float


def count_nfe(solver: str, steps: int, grid_kind: str) -> int:
    """Network evaluations `solver` spends on a `steps`-step grid (a dry run of the walk, `fastdiff.stepping`)."""
    grid = get_sigmas(grid_kind, steps, SIGMA_MIN, SIGMA_MAX).tolist()
    return len(evaluation_plan(lambda: make_solver(solver), grid).sigmas)


def steps_for_budget(solver: str, budget: int, grid_kind: str) -> int | None:
    """The most steps whose evaluation count fits `budget`; None if even one step does not."""
    best = None
    for steps in range(1, budget + 1):
        if count_nfe(solver, steps, grid_kind) > budget:
            break
        best = steps
    return best


def run_demo(
    budgets: tuple[int, ...] = (5, 10, 20, 50),
    n_samples: int = 4000,
    grid_kind: str = "recommended",
    out_dir: str | Path = "demo_output",
    seed: int = 0,
    solvers: tuple[str, ...] | None = None,
    progress: bool = True,
) -> list[DemoRow]:
    target = GaussianMixture.ring(k=8, radius=4.0, std=0.3)
    gen = torch.Generator().manual_seed(seed)
    exact = target.sample(n_samples, generator=gen)
    floor = sliced_wasserstein(target.sample(n_samples, generator=gen), exact)
    exact_nll = float(-target.log_prob(exact).mean())
    x_T = torch.randn(n_samples, 2, generator=gen, dtype=torch.float64) * SIGMA_MAX
    backend = resolve_backend("auto", x_T.device)
    grids = "each solver family's recommended grid" if grid_kind == "recommended" else f"{grid_kind} grid"
    print(f"fastdiff demo: 8-component ring mixture in 2-D, {n_samples} samples, {grids} "
          f"sigma {SIGMA_MIN}..{SIGMA_MAX}, backend: {backend}")
    names = tuple(SOLVERS) if solvers is None else solvers
    jobs = [(name, budget) for name in names for budget in budgets]
    rows, finals = [], {}
    for j in progress_range(len(jobs), progress, desc="demo"):
        name, budget = jobs[j]
        grid = grid_for(name, grid_kind)
        steps = steps_for_budget(name, budget, grid)
        if steps is None:
            continue
        sigmas = get_sigmas(grid, steps, SIGMA_MIN, SIGMA_MAX)
        out = sample(target.denoiser, x_T, sigmas, name, seed=seed, backend=backend)
        nll_gap = float(-target.log_prob(out).mean()) - exact_nll
        rows.append(DemoRow(name, grid, budget, count_nfe(name, steps, grid), steps,
                            sliced_wasserstein(out, exact), energy_distance(out, exact), nll_gap))
        finals[(name, budget)] = out
    print(format_table(rows))
    print(f"sliced W2 between two independent exact sample sets (Monte-Carlo floor): {floor:.4g}")
    paths = plot_demo(rows, finals, exact, floor, Path(out_dir))
    if paths:
        print("plots written to " + " and ".join(str(p) for p in paths))
    return rows


def format_table(rows: list[DemoRow]) -> str:
    width = max([len("solver"), *(len(r.solver) for r in rows)]) + 2
    header = f"{'solver':<{width}}{'grid':<8}{'NFE':>5}{'steps':>7}{'sliced W2':>12}{'energy':>12}{'NLL gap':>12}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r.solver:<{width}}{r.grid:<8}{r.nfe:>5}{r.steps:>7}{r.sliced_w2:>12.4g}{r.energy:>12.4g}"
                     f"{r.nll_gap:>12.4g}")
    return "\n".join(lines)


def samples_budget(budgets: list[int]) -> int:
    """SAMPLES_BUDGET if it was run, else the largest budget below it, else the smallest one."""
    below = [b for b in budgets if b <= SAMPLES_BUDGET]
    return max(below) if below else min(budgets)


def plot_demo(rows: list[DemoRow], finals: dict, exact: torch.Tensor, floor: float, out_dir: Path) -> list[Path]:
    """Error vs NFE (log-log) and sample scatters at `samples_budget`; the paths written (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install fastdiff[plot])")
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, (ax_err, ax_nll) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = plt.get_cmap("tab20").colors
    for k, name in enumerate(dict.fromkeys(r.solver for r in rows)):
        mine = [r for r in rows if r.solver == name]
        label = f"{name} ({mine[0].grid})"
        style = dict(color=colors[k % len(colors)], marker="o", ls="--" if make_solver(name).stochastic else "-", label=label)
        ax_err.loglog([r.nfe for r in mine], [r.sliced_w2 for r in mine], **style)
        ax_nll.semilogx([r.nfe for r in mine], [r.nll_gap for r in mine], **style)
    ax_err.axhline(floor, color="k", lw=0.8, ls=":", label="Monte-Carlo floor")
    ax_err.set(xlabel="network evaluations (NFE)", ylabel="sliced W2 to exact samples",
               title="error vs NFE (solid: ODE, dashed: SDE)")
    ax_nll.set_yscale("symlog", linthresh=0.01)
    ax_nll.set(xlabel="network evaluations (NFE)", ylabel="E_p[-log q] - E_q[-log q]", title="exact NLL gap (symlog)")
    ax_nll.axhline(0.0, color="k", lw=0.5)
    ax_err.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    error_path = out_dir / "demo_error_vs_nfe.png"
    fig.savefig(error_path, dpi=120)
    plt.close(fig)
    budget = samples_budget([r.nfe_budget for r in rows])
    shown = [name for (name, b) in finals if b == budget]
    cols = min(4, len(shown) + 1)
    nrows = math.ceil((len(shown) + 1) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3 * cols, 3 * nrows), squeeze=False)
    grid_of = {r.solver: r.grid for r in rows}
    panels = [("exact", exact)] + [(f"{name}, {grid_of[name]} (NFE<={budget})", finals[(name, budget)]) for name in shown]
    for ax, (title, pts) in zip(axes.flat, panels, strict=False):
        pts = pts.float().cpu()
        ax.scatter(pts[:, 0], pts[:, 1], s=1, alpha=0.4)
        ax.set(title=title, xlim=(-6, 6), ylim=(-6, 6))
        ax.set_aspect("equal")
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    samples_path = out_dir / "demo_samples.png"
    fig.savefig(samples_path, dpi=110)
    plt.close(fig)
    return [error_path, samples_path]
