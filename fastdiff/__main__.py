"""Command line: `python -m fastdiff demo [--samples N] [--grid recommended] [--out DIR]`,
`python -m fastdiff ld3 [--solver ipndm] [--nfe 4] [--out schedule.json]`, `python -m fastdiff compose-demo`,
`python -m fastdiff train [--preset toy|digits] [--loss dsm|cdm]`, `python -m fastdiff tdc [--preset toy|digits]` and
`python -m fastdiff comfyui-install PATH [--overwrite]` (`--help` on each)."""

from __future__ import annotations

import argparse

from fastdiff.grids import GRIDS


def _parse_budgets(text: str) -> tuple[int, ...]:
    try:
        budgets = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--nfe must be comma-separated integers, got {text!r}") from None
    if not budgets or min(budgets) < 1:
        raise argparse.ArgumentTypeError(f"--nfe values must be >= 1, got {text!r}")
    return budgets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fastdiff", description="fastdiff command line")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="every solver on an exact 2-D mixture: error table and plot")
    demo.add_argument("--samples", type=int, default=4000, help="samples per solver and budget (default 4000)")
    demo.add_argument("--nfe", type=_parse_budgets, default=(5, 10, 20, 50), help="comma-separated NFE budgets")
    demo.add_argument(
        "--grid",
        choices=["recommended", *sorted(GRIDS)],
        default="recommended",
        help="noise-level grid for every solver (default: each family's recommended grid, logsnr for SDE, karras for ODE)",
    )
    demo.add_argument("--out", default="demo_output", help="folder for the PNG plots (default demo_output)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    ld3 = commands.add_parser("ld3", help="learn a step schedule (LD3) on an exact mixture: comparison table and plot")
    ld3.add_argument(
        "--solver", default="ipndm", help="solver whose grid is learned: euler, heun, dpmpp_2m, ipndm (default ipndm)"
    )
    ld3.add_argument("--nfe", type=int, default=4, help="network evaluations per sample (default 4)")
    ld3.add_argument("--target", default="mixture_1d", help="exact target: mixture_1d (default), separated_1d, gaussian_8d")
    ld3.add_argument("--teacher", default="exact", help="'exact' (the exact ODE map, default) or a solver name")
    ld3.add_argument("--teacher-nfe", type=int, default=200, help="evaluations of a solver teacher (default 200)")
    ld3.add_argument("--samples", type=int, default=100, help="teacher pairs to train on (default 100)")
    ld3.add_argument("--epochs", type=int, default=100, help="at most this many training epochs (default 100)")
    ld3.add_argument("--eval-samples", type=int, default=2000, help="held-out noises for the table (default 2000)")
    ld3.add_argument("--radius", type=float, default=None, help="soft-objective slack r (default 0.001 d / NFE^2; 0 = hard)")
    ld3.add_argument(
        "--distance", choices=("l2", "squared_l2"), default="l2", help="training distance (default l2, LD3's choice)"
    )
    ld3.add_argument("--no-decouple", action="store_true", help="evaluate the model at the grid sigmas (no model-time offsets)")
    ld3.add_argument("--out", default=None, help="save the learned schedule to this JSON file")
    ld3.add_argument("--plot-dir", default="ld3_output", help="folder for the PNG (default ld3_output)")
    ld3.add_argument("--overwrite", action="store_true", help="replace an existing --out schedule file")
    ld3.add_argument("--seed", type=int, default=0)
    ld3.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    from fastdiff.compose.demo import add_subcommand as add_compose_demo
    from fastdiff.integrations.comfyui.install import add_subcommand as add_comfyui_install
    from fastdiff.train.cli import add_subcommand as add_train
    from fastdiff.train.tdc.cli import add_subcommand as add_tdc

    for add in (add_compose_demo, add_train, add_tdc, add_comfyui_install):
        add(commands)
    args = parser.parse_args(argv)
    if args.command == "demo":
        from fastdiff.demo import run_demo

        if args.samples < 2:
            parser.error("--samples must be >= 2")
        run_demo(args.nfe, args.samples, args.grid, args.out, args.seed, progress=not args.no_progress)
    elif args.command == "ld3":
        from fastdiff.ld3.cli import run_ld3
        from fastdiff.ld3.solvers import learnable_solvers
        from fastdiff.ld3.targets import TARGETS

        if args.solver not in learnable_solvers():
            parser.error(
                f"--solver must be one of {', '.join(learnable_solvers())} (solvers with learned-schedule support), "
                f"got {args.solver!r}"
            )
        if args.target not in TARGETS:
            parser.error(f"--target must be one of {', '.join(TARGETS)}, got {args.target!r}")
        if args.nfe < 1:
            parser.error(f"--nfe must be >= 1, got {args.nfe}")
        if args.samples < 2 or args.eval_samples < 2 or args.epochs < 1:
            parser.error("--samples and --eval-samples must be >= 2, --epochs >= 1")
        try:
            run_ld3(
                args.solver,
                args.nfe,
                args.target,
                args.teacher,
                args.teacher_nfe,
                args.samples,
                args.eval_samples,
                args.radius,
                not args.no_decouple,
                args.out,
                args.plot_dir,
                args.seed,
                args.epochs,
                distance=args.distance,
                progress=not args.no_progress,
                overwrite=args.overwrite,
            )
        except (ValueError, FloatingPointError) as err:
            parser.error(str(err))
    else:
        status = args.run(args)  # compose-demo returns its samples, train, tdc and comfyui-install an exit status
        return status if isinstance(status, int) else 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
