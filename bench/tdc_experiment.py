"""TDC experiment (bench/TDC.md): grouped pruned models vs the base model at equal total optimizer steps.

    python bench/tdc_experiment.py toy    [--seeds 0,1,2] [--k 0.3] [--groups 4]
    python bench/tdc_experiment.py digits [--seeds 0]     [--k 0.3] [--groups 4]

Per seed: stage 1 trains the base model for --base-steps; the baseline trains a copy on all noise levels for
groups * --finetune-steps more; TDC (stage 2) searches widths, prunes and fine-tunes each group for --finetune-steps.
Both are sampled with Heun on the 18-step Karras grid (sigma 80 -> 0.002 -> 0, 35 evaluations) from the same noise.
FLOPs per sample are counted on the whole sampling run (FlopCounterMode). Quality:
  toy:    energy distance to 4000 exact mixture samples, and the exact NLL -log p(sample) under the mixture (lower is
          not always better: collapsing onto the modes lowers it), mean over 2 sampling seeds;
  digits: energy distance in pixel space between 1000 samples and the 1797 real digits, and the Frechet distance in the
          64 hidden features of a small classifier (sklearn MLPClassifier, trained on the first 1400 digits); PNG grids.
Results go to bench/results/tdc_<preset>.json; the script prints Markdown rows.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

import fastdiff
from fastdiff.metrics import energy_distance
from fastdiff.train.data import load_digits, toy_mixture
from fastdiff.train.tdc.flops import denoiser_flops, sampling_flops
from fastdiff.train.tdc.pipeline import TDCConfig
from fastdiff.train.tdc.presets import make_preset
from fastdiff.train.tdc.run import run_preset

RESULTS = Path(__file__).parent / "results"
SIGMAS = fastdiff.get_sigmas("karras", 18, 0.002, 80.0)


@torch.no_grad()
def draw(denoiser, shape, n, seed):
    x = torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed)) * SIGMAS[0].item()
    return fastdiff.sample(denoiser, x, SIGMAS, "heun", backend="reference")


def toy_quality(denoiser, seed):
    gm = toy_mixture()
    out = {"energy": [], "nll": []}
    for s in (1000 + seed, 2000 + seed):
        samples = draw(denoiser, (2,), 4000, s).double()
        truth = gm.sample(4000, generator=torch.Generator().manual_seed(s + 7))
        out["energy"].append(energy_distance(samples, truth))
        out["nll"].append(-gm.log_prob(samples).mean().item())
    return {k: sum(v) / len(v) for k, v in out.items()}


def classifier_features():
    from sklearn.datasets import load_digits
    from sklearn.neural_network import MLPClassifier

    digits = load_digits()
    x = digits.images.reshape(len(digits.images), -1) / 8.0 - 1.0
    clf = MLPClassifier(hidden_layer_sizes=(64,), max_iter=500, random_state=0).fit(x[:1400], digits.target[:1400])
    accuracy = clf.score(x[1400:], digits.target[1400:])
    w, b = torch.as_tensor(clf.coefs_[0]), torch.as_tensor(clf.intercepts_[0])
    return (lambda images: torch.relu(images.double().flatten(1) @ w + b)), accuracy


def frechet(a, b):
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    vals, vecs = torch.linalg.eigh(ca)
    root = vecs @ torch.diag(vals.clamp(min=0).sqrt()) @ vecs.T
    cross = torch.linalg.eigvalsh(root @ cb @ root).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + ca.trace() + cb.trace() - 2 * cross)


def digits_quality(denoiser, seed, features, png=None):
    real = load_digits()
    samples = draw(denoiser, (1, 8, 8), 1000, 1000 + seed).clamp(-1, 1)
    if png is not None:
        save_grid(samples[:100], png)
    return {
        "energy": energy_distance(samples.flatten(1).double(), real.flatten(1).double()),
        "frechet": frechet(features(samples), features(real)),
    }


def save_grid(images, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid = images[:100].view(10, 10, 8, 8).permute(0, 2, 1, 3).reshape(80, 80)
    plt.imsave(path, ((grid + 1) / 2).clamp(0, 1).numpy(), cmap="gray_r", vmin=0, vmax=1)


def one_seed(preset_name, seed, args, features=None):
    preset = make_preset(preset_name, seed=seed)
    base_steps = args.base_steps or preset.base_steps
    config = TDCConfig(n_groups=args.groups, k=args.k, finetune_steps=args.finetune_steps or preset.finetune_steps,
                       proxy_steps=args.proxy_steps or preset.proxy_steps, rounds=args.rounds, initial=args.initial,
                       per_round=args.per_round, seed=seed)
    start = time.perf_counter()
    run = run_preset(preset, config, base_steps, progress=False)
    train_s = time.perf_counter() - start
    shape = tuple(preset.x0.shape[1:])
    grouped, baseline = run.tdc.grouped, run.baseline
    report = {
        "seed": seed, "train_seconds": train_s,
        "edges": run.tdc.edges, "excess_loss": run.tdc.difficulty.excess, "loss": run.tdc.difficulty.loss,
        "irreducible": run.tdc.difficulty.irreducible, "hardest": run.tdc.difficulty.hardest,
        "budgets": [g.budget for g in run.tdc.groups], "widths": [list(g.widths) for g in run.tdc.groups],
        "group_flops": [g.flops for g in run.tdc.groups], "base_flops_per_eval": denoiser_flops(baseline, shape),
        "search_bank": [[[list(e.widths), e.flops, e.score, e.round] for e in g.bank] for g in run.tdc.groups],
        "steps": {"stage1": base_steps, "baseline_extra": config.n_groups * config.finetune_steps,
                  "finetune_per_group": config.finetune_steps, "proxy_steps": config.proxy_steps,
                  "group_finetune_total": run.tdc.finetune_steps_total, "search_proxy_total": run.tdc.proxy_steps_total},
        "flops_base": sampling_flops(baseline, shape, SIGMAS, "heun"),
        "flops_tdc": sampling_flops(grouped, shape, SIGMAS, "heun"),
    }
    if preset_name == "toy":
        report["base"], report["tdc"] = toy_quality(baseline, seed), toy_quality(grouped, seed)
        report["stage1_only"] = toy_quality(run.base, seed)
    else:
        png = Path(__file__).parent
        report["base"] = digits_quality(baseline, seed, features, png / f"tdc_digits_base_seed{seed}.png")
        report["tdc"] = digits_quality(grouped, seed, features, png / f"tdc_digits_grouped_seed{seed}.png")
        report["stage1_only"] = digits_quality(run.base, seed, features)
    report["total_seconds"] = time.perf_counter() - start
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", choices=("toy", "digits"))
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--k", type=float, default=0.3)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--base-steps", type=int, default=None)
    parser.add_argument("--finetune-steps", type=int, default=None)
    parser.add_argument("--proxy-steps", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--initial", type=int, default=3)
    parser.add_argument("--per-round", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    features, accuracy = classifier_features() if args.preset == "digits" else (None, None)
    metric = "nll" if args.preset == "toy" else "frechet"
    print(f"| seed | FLOPs/sample base | TDC | saving | energy base | energy TDC | {metric} base | {metric} TDC | widths | s |")
    print("|---|---|---|---|---|---|---|---|---|---|", flush=True)
    reports = []
    for seed in args.seeds.split(","):
        r = one_seed(args.preset, int(seed), args, features)
        reports.append(r)
        out = {"preset": args.preset, "args": vars(args), "classifier_accuracy": accuracy, "torch": torch.__version__,
               "threads": args.threads, "reports": reports}
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"tdc_{args.preset}.json").write_text(json.dumps(out, indent=1))
        saving = 1 - r["flops_tdc"] / r["flops_base"]
        print(f"| {r['seed']} | {r['flops_base']:.4g} | {r['flops_tdc']:.4g} | {saving:.1%} | {r['base']['energy']:.4g} | "
              f"{r['tdc']['energy']:.4g} | {r['base'][metric]:.4g} | {r['tdc'][metric]:.4g} | {r['widths']} | "
              f"{r['total_seconds']:.0f} |", flush=True)

if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
