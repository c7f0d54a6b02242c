"""PNG of a learned grid beside the hand-designed ones, and their held-out errors (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

from fastdiff.ld3.baselines import HAND_DESIGNED
from fastdiff.ld3.compare import GridError, hand_designed_sigmas
from fastdiff.ld3.schedule import LearnedSchedule


def plot_grids(schedule: LearnedSchedule, rows: list[GridError], path: str | Path) -> Path | None:
    """Left: sigma against step index (log scale), learned grid, its model times and the baselines; right: RMSE per
    grid. Returns the path, or None without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install fastdiff[plot])")
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, (ax_grid, ax_err) = plt.subplots(1, 2, figsize=(12, 4.5))
    positive = [s for s in schedule.sigma_list if s > 0]
    steps = range(len(positive))
    for kind in HAND_DESIGNED:
        ax_grid.semilogy(steps, [s for s in hand_designed_sigmas(kind, schedule) if s > 0], marker=".", lw=1, label=kind)
    ax_grid.semilogy(steps, positive, color="k", marker="o", lw=2, label="learned (solver sigmas)")
    if schedule.decoupled:
        ax_grid.semilogy(
            steps,
            [s for s in schedule.model_sigma_list if s > 0],
            color="k",
            marker="x",
            ls="none",
            ms=9,
            label="learned (model sigmas)",
        )
    ax_grid.set(xlabel="grid index", ylabel="sigma", title=f"{schedule.solver}, NFE {schedule.nfe}: grids")
    ax_grid.legend(fontsize=8)
    names = [r.grid for r in rows]
    ax_err.bar(names, [r.rmse for r in rows], color=["k" if n == "learned" else "tab:gray" for n in names])
    ax_err.set_yscale("log")
    ax_err.set(ylabel="RMSE to the exact ODE solution (held-out noise)", title="error per grid")
    ax_err.tick_params(axis="x", labelrotation=20)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
