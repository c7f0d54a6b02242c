"""`python -m fastdiff compose-demo`: SuperDiff OR and AND of two exact 2-D mixtures beside the averaged-scores baseline.

Model A has components at (-3, 0) and (1.5, 0), model B at (1.5, 0) and (1.5, 4): they share one component.
OR should sample the mixture (q_A + q_B)/2, so the shared component carries half the mass; AND should sample
where log q_A = log q_B, which puts its samples around the shared component; averaging the two scores (the naive
baseline) samples neither. Prints the measured component masses against the exact ones and the mean exact
log-density gap |log q_A - log q_B| at the samples, and writes a PNG of the three sample clouds.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from fastdiff.backends import BACKENDS, resolve_backend
from fastdiff.compose.sampler import sample_superposed
from fastdiff.grids import get_sigmas
from fastdiff.toy import GaussianMixture

MODEL_A = GaussianMixture([[-3.0, 0.0], [1.5, 0.0]], stds=0.5)
MODEL_B = GaussianMixture([[1.5, 0.0], [1.5, 4.0]], stds=0.5)
COMPONENTS = torch.tensor([[-3.0, 0.0], [1.5, 0.0], [1.5, 4.0]], dtype=torch.float64)
OR_MASS = torch.tensor([0.25, 0.5, 0.25], dtype=torch.float64)  # (q_A + q_B) / 2
SIGMA_MIN, SIGMA_MAX = 0.02, 20.0


def component_masses(samples: torch.Tensor) -> torch.Tensor:
    """Fraction of samples nearest each of the three component means."""
    nearest = torch.cdist(samples, COMPONENTS).argmin(dim=1)
    return torch.bincount(nearest, minlength=len(COMPONENTS)).double() / samples.shape[0]


def density_gap(samples: torch.Tensor, sigma: float) -> float:
    """Mean of the exact |log q_A - log q_B| at the samples."""
    return float((MODEL_A.log_prob(samples, sigma) - MODEL_B.log_prob(samples, sigma)).abs().mean())


def _averaged(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    return 0.5 * (MODEL_A.denoiser(x, sigma) + MODEL_B.denoiser(x, sigma))


def run(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """Sample OR, AND and the baseline, print the table, write the PNG; returns the samples by name."""
    if args.samples < 10 or args.steps < 2:
        raise SystemExit("compose-demo: --samples must be >= 10 and --steps >= 2")
    sigmas = get_sigmas("logsnr", args.steps, SIGMA_MIN, SIGMA_MAX)[:-1].tolist()
    gen = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.samples, 2, dtype=torch.float64, generator=gen) * sigmas[0]
    models = [MODEL_A.denoiser, MODEL_B.denoiser]
    backend = resolve_backend(args.backend, x.device)
    print(f"fastdiff compose-demo: two 2-D mixtures sharing one component, {args.samples} samples, {args.steps} steps "
          f"sigma {SIGMA_MAX}..{SIGMA_MIN}, backend: {backend}")
    progress = not args.no_progress
    runs = {
        "OR": sample_superposed(models, x, sigmas, "or", seed=args.seed, backend=args.backend, progress=progress)[0],
        "AND": sample_superposed(models, x, sigmas, "and", seed=args.seed, backend=args.backend, progress=progress)[0],
        "averaged scores": sample_superposed([_averaged], x, sigmas, "or", seed=args.seed, backend=args.backend,
                                             progress=progress)[0],
    }
    print(f"{'':>16} {'mass (-3,0)':>12} {'mass (1.5,0)':>13} {'mass (1.5,4)':>13} {'mean |log qA - log qB|':>25}")
    print(f"{'OR target':>16} " + " ".join(f"{v:>12.3f}" for v in OR_MASS.tolist()) + f" {'':>25}")
    for name, samples in runs.items():
        masses = component_masses(samples).tolist()
        print(f"{name:>16} {masses[0]:>12.3f} {masses[1]:>13.3f} {masses[2]:>13.3f} {density_gap(samples, sigmas[-1]):>25.3f}")
    _plot(runs, Path(args.out))
    return runs


def _plot(runs: dict[str, torch.Tensor], out_dir: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install fastdiff[plot])")
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 4.2), sharex=True, sharey=True)
    for ax, (name, samples) in zip(axes, runs.items(), strict=True):
        ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.4)
        ax.scatter(MODEL_A.means[:, 0], MODEL_A.means[:, 1], marker="o", facecolors="none", edgecolors="C1", s=160, label="A")
        ax.scatter(MODEL_B.means[:, 0], MODEL_B.means[:, 1], marker="s", facecolors="none", edgecolors="C2", s=160, label="B")
        ax.set_title(name)
        ax.set_xlim(-6, 5)
        ax.set_ylim(-3, 7)
        ax.set_aspect("equal")
    axes[0].legend(loc="upper left")
    fig.suptitle("SuperDiff on exact mixtures: OR (mixture), AND (equal densities), averaged scores")
    fig.tight_layout()
    path = out_dir / "compose_demo.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {path}")


def add_subcommand(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add `compose-demo` to an argparse subparsers object; the parsed namespace's `run(args)` runs it."""
    parser = commands.add_parser("compose-demo", help="SuperDiff OR / AND of two exact 2-D mixtures vs averaged scores")
    parser.add_argument("--samples", type=int, default=2000, help="samples per method (default 2000)")
    parser.add_argument("--steps", type=int, default=100, help="sampling steps (default 100)")
    parser.add_argument("--backend", choices=("auto", *BACKENDS), default="auto", help="ito_step backend (default auto)")
    parser.add_argument("--out", default="demo_output", help="folder for compose_demo.png (default demo_output)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    parser.set_defaults(run=run)
    return parser
