"""LD3 benchmark: learned vs hand-designed grids on exact targets, and the two ablations (bench/LD3.md).

    python bench/ld3_table.py table      [--targets mixture_1d,gaussian_8d,separated_1d] [--distance l2] [--threads 2]
    python bench/ld3_table.py ablation   [--targets mixture_1d,gaussian_8d] [--nfe 4,8] [--seeds 0,1,2]
    python bench/ld3_table.py radius     (held-out RMSE against the soft objective's radius)
    python bench/ld3_table.py teacher    (2-D ring mixture, fine-Heun float64 teacher and reference)

Every run: sigma 80 -> 0.002 (no step to 0), 100 training pairs from the exact ODE map (`ode_solution`), defaults of
`fastdiff.ld3.learn_sigmas` unless stated, errors on 2000 held-out noises (another seed) against the exact ODE
solution: RMSE per coordinate and sliced W2 between the outputs and the exact outputs. "best hand" is the smallest
of karras (rho 7), logsnr, time_uniform, time_quadratic at the same steps. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from fastdiff.grids import get_sigmas
from fastdiff.ld3 import learn_sigmas
from fastdiff.ld3.compare import compare
from fastdiff.ld3.network import NetworkCall
from fastdiff.ld3.solve import solve
from fastdiff.ld3.targets import TARGETS
from fastdiff.toy import GaussianMixture

SIGMA_MIN, SIGMA_MAX = 0.002, 80.0
SOLVERS = ("euler", "heun", "dpmpp_2m", "ipndm")


def held_out(gm: GaussianMixture, n: int = 2000, seed: int = 123) -> tuple[torch.Tensor, torch.Tensor]:
    x_T = torch.randn(n, gm.dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * SIGMA_MAX
    return x_T, gm.ode_solution(x_T, SIGMA_MAX, SIGMA_MIN)


def run(gm, solver, nfe, x_T, exact, **options):
    start = time.perf_counter()
    schedule = learn_sigmas(gm.denoiser, solver, nfe, shape=(gm.dim,), teacher_solver=gm.ode_solution, progress=False, **options)
    seconds = time.perf_counter() - start
    return schedule, compare(gm.denoiser, schedule, x_T, exact), seconds


def table(targets, nfes, distance="l2"):
    print(
        "| target | solver | NFE | learned RMSE | best hand RMSE (grid) | ratio | learned W2 | best hand W2 | W2 ratio "
        "| train s | epochs | start |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in targets:
        gm = TARGETS[name]()
        x_T, exact = held_out(gm)
        for solver in SOLVERS:
            for nfe in nfes:
                schedule, rows, seconds = run(gm, solver, nfe, x_T, exact, distance=distance)
                hand = rows[1:]
                best = min(hand, key=lambda r: r.rmse)
                best_w2 = min(r.sliced_w2 for r in hand)
                print(
                    f"| {name} | {solver} | {nfe} | {rows[0].rmse:.3e} | {best.rmse:.3e} ({best.grid}) | "
                    f"{rows[0].rmse / best.rmse:.3f} | {rows[0].sliced_w2:.3e} | {best_w2:.3e} | "
                    f"{rows[0].sliced_w2 / best_w2:.3f} | {seconds:.1f} | {schedule.config['epochs']} | "
                    f"{schedule.config['init']} |",
                    flush=True,
                )


def ablation(targets, nfes, seeds, solvers):
    variants = {
        "default (soft, decoupled)": {},
        "radius = 0": {"radius": 0.0},
        "radius x10": "x10",
        "not decoupled": {"decoupled": False},
        "xi_c by SGD lr 0.02": {"model_time_optimizer": "sgd", "lr_model_time": 0.02},
    }
    print("| target | solver | NFE | " + " | ".join(variants) + " |")
    print("|---|---|---|" + "---|" * len(variants))
    for name in targets:
        gm = TARGETS[name]()
        x_T, exact = held_out(gm)
        for solver in solvers:
            for nfe in nfes:
                cells = []
                for options in variants.values():
                    if options == "x10":
                        options = {"radius": 0.01 * gm.dim / nfe**2}
                    errs = [run(gm, solver, nfe, x_T, exact, seed=s, **options)[1][0].rmse for s in seeds]
                    cells.append(f"{statistics.mean(errs):.3e} ({min(errs):.2e}..{max(errs):.2e})")
                print(f"| {name} | {solver} | {nfe} | " + " | ".join(cells) + " |", flush=True)


def radius_sweep(targets, nfes, seeds, solvers):
    """Held-out RMSE against the soft objective's radius r (units of sigma_T); LD3's default is 0.001 d / NFE^2."""
    radii = (0.0, None, 0.01, 0.05, 0.2)
    print("| target | solver | NFE | " + " | ".join("default" if r is None else f"r = {r}" for r in radii) + " |")
    print("|---|---|---|" + "---|" * len(radii))
    for name in targets:
        gm = TARGETS[name]()
        x_T, exact = held_out(gm)
        for solver in solvers:
            for nfe in nfes:
                cells = []
                for r in radii:
                    errs = [run(gm, solver, nfe, x_T, exact, seed=s, radius=r)[1][0].rmse for s in seeds]
                    cells.append(f"{statistics.mean(errs):.3e}")
                print(f"| {name} | {solver} | {nfe} | " + " | ".join(cells) + " |", flush=True)


def teacher_run(nfes):
    """A 2-D ring of 8 Gaussians (no closed-form map): Heun with 200 evaluations as the teacher, Heun with 2000 as
    the reference."""
    gm = GaussianMixture.ring(k=8, radius=4.0, std=0.3)
    x_T = torch.randn(2000, 2, generator=torch.Generator().manual_seed(123), dtype=torch.float64) * SIGMA_MAX
    fine = get_sigmas("karras", 1001, SIGMA_MIN, SIGMA_MAX).tolist()[:-1]
    reference = solve(NetworkCall(gm.denoiser), "heun", {}, fine, x_T, backend="auto")
    print("| solver | NFE | learned RMSE | best hand RMSE (grid) | ratio | train s |")
    print("|---|---|---|---|---|---|")
    for solver in SOLVERS:
        for nfe in nfes:
            start = time.perf_counter()
            schedule = learn_sigmas(gm.denoiser, solver, nfe, shape=(2,), teacher_solver="heun", teacher_nfe=200, progress=False)
            seconds = time.perf_counter() - start
            rows = compare(gm.denoiser, schedule, x_T, reference)
            best = min(rows[1:], key=lambda r: r.rmse)
            print(
                f"| {solver} | {nfe} | {rows[0].rmse:.3e} | {best.rmse:.3e} ({best.grid}) | {rows[0].rmse / best.rmse:.3f} "
                f"| {seconds:.1f} |",
                flush=True,
            )


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("table", "ablation", "radius", "teacher"))
    parser.add_argument("--targets", default=None)
    parser.add_argument("--solvers", default=None)
    parser.add_argument("--nfe", default=None)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    parser.add_argument("--distance", default="l2", choices=("l2", "squared_l2"), help="training distance (table only)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU thread(s)")
    if args.what == "table":
        table(
            (args.targets or "mixture_1d,gaussian_8d,separated_1d").split(","),
            [int(v) for v in (args.nfe or "4,6,8,10").split(",")],
            args.distance,
        )
    elif args.what == "ablation":
        ablation(
            (args.targets or "mixture_1d,gaussian_8d").split(","),
            [int(v) for v in (args.nfe or "4,8").split(",")],
            [int(v) for v in args.seeds.split(",")],
            (args.solvers or ",".join(SOLVERS)).split(","),
        )
    elif args.what == "radius":
        radius_sweep(
            (args.targets or "mixture_1d,gaussian_8d").split(","),
            [int(v) for v in (args.nfe or "4").split(",")],
            [int(v) for v in args.seeds.split(",")],
            (args.solvers or "dpmpp_2m,ipndm").split(","),
        )
    else:
        teacher_run([int(v) for v in (args.nfe or "4,6,8,10").split(",")])


if __name__ == "__main__":
    main()
