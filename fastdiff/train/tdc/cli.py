"""`python -m fastdiff tdc`: TDC on a preset (toy: 2-D mixture ring + MLP; digits: 8x8 digits + UNet). Trains the
base model, runs stage 2, prints the groups (SNR range, excess loss, budget, widths, FLOPs) and the FLOPs per sample
of a Heun run on the 18-step Karras grid for the base model and the grouped models; `--out` saves the grouped model.

`--out` is checked before any training: an existing file is replaced only with `--overwrite`. A diverging training
step stops the run with its step and writes nothing."""

from __future__ import annotations

import argparse
from pathlib import Path

from fastdiff.train.tdc.presets import PRESETS

SAMPLING_STEPS = 18


def add_subcommand(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `tdc` subparser to `commands` (from `parser.add_subparsers()`), with `run` set to `run_tdc_command`."""
    tdc = commands.add_parser("tdc", help="timestep-grouped pruned models (TDC) on a preset: train, prune, fine-tune")
    tdc.add_argument("--preset", choices=PRESETS, default="toy", help="toy (2-D mixture, MLP; default) or digits (UNet)")
    tdc.add_argument("--k", type=float, default=0.3, help="budget floor: group i gets (i/N + (N-i)/N k) F_base (default 0.3)")
    tdc.add_argument("--groups", type=int, default=4, help="number of SNR groups N (default 4)")
    tdc.add_argument("--base-steps", type=int, default=None, help="stage-1 steps (default toy 4000, digits 2000)")
    tdc.add_argument("--finetune-steps", type=int, default=None, help="fine-tuning steps per group (default toy 500, digits 250)")
    tdc.add_argument("--proxy-steps", type=int, default=None, help="steps per proxy fine-tune (default toy 100, digits 40)")
    tdc.add_argument("--rounds", type=int, default=2, help="search rounds after the initial proposals (default 2)")
    tdc.add_argument("--seed", type=int, default=0)
    tdc.add_argument("--out", default=None, help="save the grouped model to this file (load with tdc.load_grouped)")
    tdc.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    tdc.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    tdc.set_defaults(run=run_tdc_command)
    return tdc


def run_tdc_command(args: argparse.Namespace) -> int:
    import fastdiff
    from fastdiff.train.loop import DivergenceError
    from fastdiff.train.tdc.checkpoint import save_grouped
    from fastdiff.train.tdc.flops import sampling_flops
    from fastdiff.train.tdc.groups import snr_db
    from fastdiff.train.tdc.pipeline import TDCConfig
    from fastdiff.train.tdc.presets import make_preset
    from fastdiff.train.tdc.run import run_preset

    if args.out:
        out = Path(args.out)
        if out.is_dir():
            raise SystemExit(f"tdc: --out {args.out!r} is a folder; expected a file name for the grouped model")
        if out.exists() and not args.overwrite:
            raise SystemExit(f"tdc: --out {args.out!r} already exists; pass --overwrite to replace it, or choose "
                             f"another --out")
    preset = make_preset(args.preset, seed=args.seed)
    base_steps = args.base_steps if args.base_steps is not None else preset.base_steps
    config = TDCConfig(
        n_groups=args.groups, k=args.k, seed=args.seed, rounds=args.rounds,
        finetune_steps=args.finetune_steps if args.finetune_steps is not None else preset.finetune_steps,
        proxy_steps=args.proxy_steps if args.proxy_steps is not None else preset.proxy_steps,
    )
    print(f"fastdiff tdc: preset {args.preset}, N = {config.n_groups} groups, k = {config.k}, stage 1 {base_steps} steps, "
          f"{config.finetune_steps} fine-tuning steps per group (the baseline: {config.n_groups * config.finetune_steps} more)")
    try:
        run = run_preset(preset, config, base_steps, progress=not args.no_progress)
    except DivergenceError as err:
        raise SystemExit(f"tdc: a training run diverged at its step {err.step}: {err.reason} (lr {err.lr:g}); "
                         f"stopped, nothing was written") from None
    result, sd = run.tdc, run.base.sigma_data
    print(f"{'group':>5} {'sigma range':>20} {'SNR dB':>16} {'excess loss':>12} {'budget':>10} {'FLOPs':>10}  widths")
    for g, rep in enumerate(result.groups):
        mark = " (hardest)" if g == result.difficulty.hardest else ""
        print(f"{g:>5} {rep.lo:>9.4g} .. {rep.hi:<8.4g} {snr_db(rep.hi, sd):>6.1f} .. {snr_db(rep.lo, sd):<6.1f} "
              f"{result.difficulty.excess[g]:>12.4g} {rep.budget:>10.4g} {rep.flops:>10.4g}  {list(rep.widths)}{mark}")
    sigmas = fastdiff.get_sigmas("karras", SAMPLING_STEPS, config.sigma_min, config.sigma_max)
    shape = tuple(preset.x0.shape[1:])
    base, grouped = sampling_flops(run.baseline, shape, sigmas, "heun"), sampling_flops(result.grouped, shape, sigmas, "heun")
    print(f"FLOPs per sample, Heun on the {SAMPLING_STEPS}-step Karras grid: base {base:.4g}, grouped {grouped:.4g} "
          f"({1 - grouped / base:.1%} fewer); search proxy steps {result.proxy_steps_total}")
    if args.out:
        try:
            save_grouped(result.grouped, args.out, overwrite=args.overwrite)
        except OSError as err:
            raise SystemExit(f"tdc: {err}") from None
        print(f"saved the grouped model to {args.out}")
    return 0
