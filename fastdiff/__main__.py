"""Command line: `python -m fastdiff demo [--samples N] [--grid karras] [--out DIR]`."""

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
    demo.add_argument("--grid", choices=sorted(GRIDS), default="karras", help="noise-level grid (default karras)")
    demo.add_argument("--out", default="demo_output", help="folder for the PNG plots (default demo_output)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    args = parser.parse_args(argv)
    if args.command == "demo":
        from fastdiff.demo import run_demo

        if args.samples < 2:
            parser.error("--samples must be >= 2")
        run_demo(args.nfe, args.samples, args.grid, args.out, args.seed, progress=not args.no_progress)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
