"""CDM vs DSM on a 2-D mixture with a known score: true-score error on the sampler's own trajectory, sample quality,
training time. Writes bench/CDM.md, bench/results/cdm_toy.json and bench/cdm_toy.png.

For each seed, MLP denoisers start from the same initialization and see the same data and noise stream for the same
number of optimizer steps: one trained with EDM's DSM loss, the others with DSM + lambda_cp L_cp
(fastdiff.train.cdm_loss; lambda_cp 10, the default of docs/ALGORITHMS.md, and 1000). Each EMA model then samples N points
with Heun (18 steps) and with Euler-Maruyama (64 steps) on the Karras grid 0.002..80; along each trajectory we record,
at every grid level sigma_i, the model's error against the exact denoiser of the mixture,

    e(sigma) = |D_theta(x, sigma) - D*(x, sigma)|^2 / sigma^2 = sigma^2 |s_theta(x, sigma) - s*(x, sigma)|^2,

at the points x the sampler visits ("on-trajectory"), and at forward-noised data x0 + sigma eps ("on-data", the points
DSM trains on). Sample quality: the exact NLL -log p(x) of the samples under the mixture, and the energy distance to
exact draws (with the distance between two exact draw sets as the floor).

    OMP_NUM_THREADS=1 python bench/cdm_experiment.py   # 9 to 16 min on one core of a shared 2-core machine
    python bench/cdm_experiment.py --steps 100 --seeds 1 --samples 500 --no-write   # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

import fastdiff
from fastdiff.metrics import energy_distance
from fastdiff.train import MixtureData, TrainConfig, Trainer, consistency_loss, toy_mixture
from fastdiff.train.networks import make_denoiser

HERE = Path(__file__).resolve().parent
WIDTHS = (64, 64, 64)
SAMPLERS = (("heun", 18), ("euler_maruyama", 64))  # (solver, steps on the Karras grid 0.002..80)


def train(loss: str, seed: int, steps: int, batch: int, lambda_cp: float, progress: bool) -> tuple[Trainer, float]:
    torch.manual_seed(seed)
    config = TrainConfig(steps=steps, batch_size=batch, lr=1e-3, loss=loss, lambda_cp=lambda_cp, ema_decay=0.995, seed=seed)
    trainer = Trainer(make_denoiser("mlp", dim=2, widths=WIDTHS, emb_dim=32), MixtureData(toy_mixture()), config)
    start = time.perf_counter()
    trainer.train(progress=progress)
    return trainer, time.perf_counter() - start


def _trajectory(denoiser, sampler: str, steps: int, n: int, gen: torch.Generator, seed: int):
    """(samples, [(sigma_i, x_i)] the sampler visits) for n samples from sigma_max = 80."""
    sigmas = fastdiff.get_sigmas("karras", steps, 0.002, 80.0).tolist()
    x = torch.randn(n, 2, generator=gen) * sigmas[0]
    visited: list[tuple[float, torch.Tensor]] = []

    def record(info: dict) -> None:
        visited.append((float(info["sigma"].flatten()[0]), info["x"].clone()))

    return fastdiff.sample(denoiser, x, sigmas, sampler, seed=seed, callback=record), visited


def _score_error(denoiser, x: torch.Tensor, sigma: float) -> float:
    gm = toy_mixture()
    s = torch.full((x.shape[0],), sigma)
    return float(((denoiser(x, s) - gm.denoiser(x, s)) ** 2).sum(1).mean() / sigma**2)


@torch.no_grad()
def evaluate(denoiser, n: int, seed: int) -> dict:
    gm = toy_mixture()
    gen = torch.Generator().manual_seed(10_000 + seed)
    out: dict = {}
    for sampler, steps in SAMPLERS:
        samples, visited = _trajectory(denoiser, sampler, steps, n, gen, seed)
        errors = [_score_error(denoiser, x, sigma) for sigma, x in visited]
        out[sampler] = {
            "sigmas": [v[0] for v in visited],
            "score_err_trajectory": errors,
            "mean_score_err_trajectory": statistics.fmean(errors),
            "nll": float(-gm.log_prob(samples).mean()),
            "energy_distance": energy_distance(samples.double(), gm.sample(n, generator=gen)),
            "samples": samples[:1000].tolist(),
        }
    x0 = gm.sample(n, generator=gen).to(torch.float32)
    sigmas = out["heun"]["sigmas"]
    out["score_err_data"] = [_score_error(denoiser, x0 + s * torch.randn(n, 2, generator=gen), s) for s in sigmas]
    out["mean_score_err_data"] = statistics.fmean(out["score_err_data"])
    with torch.enable_grad():  # L_cp needs no gradient, but the loss is written for training
        cp = [float(consistency_loss(denoiser, gm.sample(5000, generator=gen).float(), generator=gen).detach())
              for _ in range(8)]
    out["consistency"] = statistics.fmean(cp)
    out["consistency_se"] = statistics.stdev(cp) / math.sqrt(len(cp))
    return out


def summary(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.4g}"
    return f"{statistics.fmean(values):.4g} ± {statistics.stdev(values):.2g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--lambda-cp", type=float, nargs="+", default=[10.0, 1000.0], help="CDM weights to compare")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    gm = toy_mixture()
    floor_gen = torch.Generator().manual_seed(99)
    floor = energy_distance(gm.sample(args.samples, generator=floor_gen), gm.sample(args.samples, generator=floor_gen))
    exact_nll = float(-gm.log_prob(gm.sample(100_000, generator=floor_gen)).mean())
    variants = [("dsm", 0.0)] + [("cdm", lam) for lam in args.lambda_cp]
    runs = []
    for seed in range(args.seeds):
        for loss, lam in variants:
            trainer, seconds = train(loss, seed, args.steps, args.batch, lam, not args.no_progress)
            result = evaluate(trainer.ema.eval(), args.samples, seed)
            label = "DSM" if loss == "dsm" else f"CDM lambda_cp={lam:g}"
            result.update(label=label, loss=loss, lambda_cp=lam, seed=seed, train_seconds=seconds,
                          final_loss=statistics.fmean(row["loss"] for row in trainer.log[-100:]))
            runs.append(result)
            print(f"seed {seed} {label}: {seconds:.1f} s, score err heun {result['heun']['mean_score_err_trajectory']:.4f} "
                  f"em {result['euler_maruyama']['mean_score_err_trajectory']:.4f} data {result['mean_score_err_data']:.4f}, "
                  f"L_cp {result['consistency']:.2e}, ED heun {result['heun']['energy_distance']:.5f}", flush=True)
    table = _table(runs, floor, exact_nll)
    print(table)
    if not args.no_write:
        meta = {"steps": args.steps, "batch": args.batch, "lambda_cp": args.lambda_cp, "samples": args.samples,
                "widths": WIDTHS, "samplers": SAMPLERS, "torch": torch.__version__,
                "machine": platform.processor() or platform.machine(), "threads": 1,
                "energy_distance_floor": floor, "exact_nll": exact_nll}
        (HERE / "results").mkdir(exist_ok=True)
        (HERE / "CDM.md").write_text(_markdown(table, args, HERE / "CDM.md"))
        _plot(runs, HERE / "cdm_toy.png")
        (HERE / "results" / "cdm_toy.json").write_text(json.dumps({"meta": meta, "runs": _slim(runs)}))


def _slim(runs: list[dict]) -> list[dict]:
    """The runs without sample coordinates, except the Heun samples of seed 0 (the plotted ones)."""
    for r in runs:
        for sampler, _ in SAMPLERS:
            if r["seed"] != 0 or sampler != "heun":
                r[sampler].pop("samples", None)
    return runs


def _table(runs: list[dict], floor: float, exact_nll: float) -> str:
    labels = list(dict.fromkeys(r["label"] for r in runs))

    def col(label: str, *keys: str) -> list[float]:
        values = []
        for r in runs:
            if r["label"] == label:
                v = r
                for k in keys:
                    v = v[k]
                values.append(v)
        return values

    header = "| (lower is better everywhere) | " + " | ".join(labels) + " |"
    lines = [header, "|---" * (len(labels) + 1) + "|"]
    rows = [
        ("true-score error on the Heun trajectory (18 steps), mean over levels", ("heun", "mean_score_err_trajectory")),
        ("true-score error on the Euler-Maruyama trajectory (64 steps)", ("euler_maruyama", "mean_score_err_trajectory")),
        ("true-score error on noised data (Heun's levels)", ("mean_score_err_data",)),
        ("consistency L_cp of the trained model (8 x 5000 points)", ("consistency",)),
        (f"exact NLL of Heun samples (exact draws: {exact_nll:.4f})", ("heun", "nll")),
        ("exact NLL of Euler-Maruyama samples", ("euler_maruyama", "nll")),
        (f"energy distance to exact draws, Heun (two exact sets: {floor:.5f})", ("heun", "energy_distance")),
        ("energy distance to exact draws, Euler-Maruyama", ("euler_maruyama", "energy_distance")),
        ("final training loss (last 100 steps; CDM's includes lambda L_cp)", ("final_loss",)),
        ("training wall time, s", ("train_seconds",)),
    ]
    base = labels[0]
    for name, keys in rows:
        cells = [summary(col(base, *keys))]
        for label in labels[1:]:
            c = col(label, *keys)
            cell = summary(c)
            if keys[0] not in ("train_seconds", "final_loss"):
                wins = sum(ci < di for ci, di in zip(c, col(base, *keys), strict=True))
                cell += f" (lower on {wins}/{len(c)} seeds)"
            cells.append(cell)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    ratios = []
    for label in labels[1:]:
        r = [c / d for c, d in zip(col(label, "train_seconds"), col(base, "train_seconds"), strict=True)]
        ratios.append(summary(r))
    lines.append("| training-time ratio to DSM | 1 | " + " | ".join(ratios) + " |")
    return "\n".join(lines)


def _markdown(table: str, args, existing: Path) -> str:
    """The generated part, followed by the hand-written reading of an existing CDM.md (kept across re-runs)."""
    reading = ""
    if existing.is_file() and "## Reading" in existing.read_text():
        reading = existing.read_text().split("## Reading", 1)[1].strip()
    return f"""# CDM (consistency loss) vs DSM on an exact 2-D mixture

`bench/cdm_experiment.py` ({args.seeds} seeds, {args.steps} Adam steps each, batch {args.batch}, lr 1e-3, MLP {WIDTHS},
EMA 0.995 with warm-up, lambda_cp in {args.lambda_cp}; samplers: Heun (18 steps, 35 evaluations) and Euler-Maruyama (64 steps) on
the Karras grid 0.002..80, {args.samples} samples each; one CPU thread on a shared 2-core machine, torch
{torch.__version__}). Target: `fastdiff.train.toy_mixture()` (nine isotropic components), whose exact denoiser D*
gives the true score. Score error at level sigma: E|D_theta - D*|^2 / sigma^2 = sigma^2 E|s_theta - s*|^2, averaged
over the grid levels. All models of a seed share initialization, data and noise streams and take the same number of
optimizer steps. Values: mean ± standard deviation over seeds; "lower on k/n seeds" compares with DSM seed by seed.

{table}

Raw numbers per seed and per noise level: `results/cdm_toy.json`; plot: `cdm_toy.png` (score error along both
trajectories vs sigma, and Heun samples of seed 0).

## Reading

{reading}
"""


def _plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, ax_d, ax_s) = plt.subplots(1, 3, figsize=(15, 4.5))
    palette = ("tab:blue", "tab:red", "tab:green", "tab:purple")
    colors = {label: palette[i % len(palette)] for i, label in enumerate(dict.fromkeys(r["label"] for r in runs))}
    for r in runs:
        label = r["label"] if r["seed"] == 0 else None
        ax.loglog(r["heun"]["sigmas"], r["heun"]["score_err_trajectory"], color=colors[r["label"]], alpha=0.7, label=label)
        em = r["euler_maruyama"]
        ax_d.loglog(em["sigmas"], em["score_err_trajectory"], color=colors[r["label"]], alpha=0.7, label=label)
    for a, title in ((ax, "on the Heun trajectory"), (ax_d, "on the Euler-Maruyama trajectory")):
        a.set_xlabel("sigma")
        a.set_ylabel("sigma^2 |s_theta - s*|^2")
        a.set_title(f"true-score error {title}")
        a.legend()
    gm = toy_mixture()
    exact = gm.sample(1000, generator=torch.Generator().manual_seed(0))
    ax_s.scatter(exact[:, 0], exact[:, 1], s=2, color="gray", alpha=0.4, label="exact")
    for r in runs:
        if r["seed"] == 0:
            pts = torch.tensor(r["heun"]["samples"])
            ax_s.scatter(pts[:, 0], pts[:, 1], s=2, color=colors[r["label"]], alpha=0.4, label=r["label"])
    ax_s.set_aspect("equal")
    ax_s.legend(markerscale=4)
    ax_s.set_title("Heun samples (seed 0)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
