"""`python -m fastdiff train`: train a denoiser on a preset and write a checkpoint, the loss log and a PNG of samples.

Presets: `toy` (the 2-D mixture `fastdiff.train.toy_mixture`, exact draws every step, MLP) and `digits`
(scikit-learn's 8x8 digits in [-1, 1], UNet). Under `torchrun --nproc_per_node W -m fastdiff train ...` every rank
trains its share of the batch with DistributedDataParallel (gloo on CPU, NCCL on GPU) and samples its share of the
PNG's samples; rank 0 writes the files.

Nothing is lost or hidden:
- a new run refuses an output folder holding another run's checkpoint.pt, losses.csv or samples.png unless
  `--overwrite` is given; a resumed run writes to the checkpoint's own folder by default and replaces its files;
- a NaN or infinite loss or gradient stops the run with the step, the last good checkpoint stays as it was;
- an unusable `--resume` file (corrupt, not a fastdiff checkpoint, incomplete, diverged weights, not fitting
  `--preset`) is named with what is wrong; `--steps` at or below its step trains and writes nothing and says so;
- with `--resume`, options given explicitly (`--lr`, `--loss`, `--batch`, `--lambda-cp`, `--ema-decay`, `--seed`)
  replace the checkpoint's values from its next step on, and the run prints each change; options left out keep the
  checkpoint's values.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.distributed as dist

PRESETS = {
    # preset: (network kind, network config, steps, batch, lr, samples in the PNG)
    "toy": ("mlp", {"dim": 2, "widths": (128, 128, 128), "emb_dim": 32}, 3000, 256, 1e-3, 2000),
    "digits": ("unet", {"in_channels": 1, "widths": (32, 64), "emb_dim": 64}, 3000, 128, 5e-4, 64),
}
SAMPLE_SHAPES = {"toy": (2,), "digits": (1, 8, 8)}
OUTPUTS = ("checkpoint.pt", "losses.csv", "samples.png")
# options a resumed run may change: (flag, TrainConfig field, attribute of args)
RESUMABLE = (("--steps", "steps", "steps"), ("--batch", "batch_size", "batch"), ("--lr", "lr", "lr"),
             ("--loss", "loss", "loss"), ("--lambda-cp", "lambda_cp", "lambda_cp"),
             ("--ema-decay", "ema_decay", "ema_decay"), ("--seed", "seed", "seed"))
SAMPLING_STEPS = 32  # Heun on the Karras grid 0.002..80


def add_subcommand(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `train` subparser to `commands` (from `parser.add_subparsers()`), with `run` set to `run_train_command`."""
    train = commands.add_parser("train", help="train a denoiser (DSM or CDM) on a preset: checkpoint, loss log, samples")
    train.add_argument("--preset", choices=sorted(PRESETS), default=None,
                       help="toy (2-D mixture, MLP; default) or digits; with --resume, the one the checkpoint fits")
    train.add_argument("--steps", type=int, default=None,
                       help="optimizer steps in total (default toy 3000, digits 3000; with --resume the checkpoint's)")
    train.add_argument("--batch", type=int, default=None, help="global batch size over all ranks (default toy 256, digits 128)")
    train.add_argument("--lr", type=float, default=None, help="Adam learning rate (default toy 1e-3, digits 5e-4)")
    train.add_argument("--loss", choices=("dsm", "cdm"), default=None, help="dsm (default) or cdm (DSM + lambda_cp L_cp)")
    train.add_argument("--lambda-cp", type=float, default=None, help="weight of the CDM consistency term (default 10)")
    train.add_argument("--ema-decay", type=float, default=None, help="EMA decay per step (default 0.999)")
    train.add_argument("--seed", type=int, default=None, help="run seed: initialization, data order, noise (default 0)")
    train.add_argument("--out", default=None, help="folder for checkpoint.pt, losses.csv, samples.png (default "
                                                   "train_output; with --resume the checkpoint's folder)")
    train.add_argument("--overwrite", action="store_true", help="replace the files of another run in --out")
    train.add_argument("--resume", default=None, help="continue the run in this checkpoint up to --steps; --batch, --lr, "
                       "--loss, --lambda-cp, --ema-decay, --seed given explicitly replace its values (and say so)")
    train.add_argument("--checkpoint-every", type=int, default=0, help="also save every N steps (default 0: at the end)")
    train.add_argument("--samples", type=int, default=None, help="samples in the PNG (default toy 2000, digits 64)")
    train.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    train.set_defaults(run=run_train_command)
    return train


def _check_args(args: argparse.Namespace) -> None:
    for name in ("steps", "batch", "samples"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"train: --{name} must be >= 1, got {value}")
    if args.lr is not None and not args.lr > 0:
        raise SystemExit(f"train: --lr must be > 0, got {args.lr}")
    if args.checkpoint_every < 0:
        raise SystemExit(f"train: --checkpoint-every must be >= 0, got {args.checkpoint_every}")


def run_train_command(args: argparse.Namespace) -> int:
    """Train (or resume) and write checkpoint.pt, losses.csv and samples.png to the output folder; 0 on success and
    when there is nothing to train. Refusals, unusable checkpoints and divergence exit with a message (SystemExit)."""
    from fastdiff.train.distributed import init_from_env

    _check_args(args)
    device = init_from_env()
    try:
        _train_and_write(args, device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def _resolve_preset(args: argparse.Namespace, state: dict | None) -> str:
    """--preset, else the toy preset for a new run and the preset whose samples fit the checkpoint's denoiser."""
    if state is None:
        return args.preset or "toy"
    from fastdiff.train.checkpoint import arch_string
    from fastdiff.train.networks import make_denoiser

    with torch.device("meta"):
        denoiser = make_denoiser(**state["denoiser"])
    problems = {}
    for name, shape in SAMPLE_SHAPES.items():
        try:
            denoiser.check_sample_shape(shape)
        except ValueError as err:
            problems[name] = str(err)
    fits = [name for name in PRESETS if name not in problems]
    if args.preset is not None and args.preset in problems:
        hint = f"; it fits --preset {fits[0]} (or leave --preset out)" if fits else ""
        raise SystemExit(f"train: --preset {args.preset} does not fit --resume {args.resume!r}: its denoiser "
                         f"({arch_string(state['denoiser'])}) does not take the {args.preset} preset's samples: "
                         f"{problems[args.preset]}{hint}")
    if args.preset is None and not fits:
        raise SystemExit(f"train: --resume {args.resume!r} holds a denoiser ({arch_string(state['denoiser'])}) that fits no "
                         f"preset: " + "; ".join(f"{name}: {why}" for name, why in problems.items()))
    return args.preset or fits[0]


def _output_problem(args: argparse.Namespace, out: Path) -> str | None:
    """Why the run may not write to `out` (another run's files there, without --overwrite), or None."""
    if out.exists() and not out.is_dir():
        return f"train: --out {str(out)!r} is a file; expected a folder"
    if args.overwrite:
        return None
    if args.resume is not None and (out / "checkpoint.pt").resolve() == Path(args.resume).resolve():
        return None  # the resumed run's own folder: its files are this run's
    existing = [name for name in OUTPUTS if (out / name).exists()]
    if existing:
        return (f"train: --out {str(out)!r} already holds {', '.join(existing)} of another run; pass --overwrite to "
                f"replace them, or choose another --out" + ("" if args.resume is None else
                                                             f" (or --out {str(Path(args.resume).parent)!r})"))
    return None


def _agree(problem: str | None, rank: int, world: int, device: torch.device) -> None:
    """Stop every rank with rank 0's `problem` (a message) if it has one."""
    if world > 1:
        flag = torch.tensor([0 if problem is None else 1], device=device)
        dist.all_reduce(flag)
        if problem is None and flag.item():
            problem = "train: rank 0 refused to start (its message says why)"
    if problem is not None:
        raise SystemExit(problem)


def _train_and_write(args: argparse.Namespace, device: torch.device) -> None:
    from fastdiff.train.checkpoint import CheckpointError, load_checkpoint
    from fastdiff.train.config import TrainConfig
    from fastdiff.train.data import MixtureData, TensorData, load_digits, toy_mixture
    from fastdiff.train.distributed import rank_and_world
    from fastdiff.train.loop import DivergenceError, Trainer, write_log
    from fastdiff.train.networks import make_denoiser

    rank, world = rank_and_world()
    state = None
    if args.resume is not None:
        try:
            state = load_checkpoint(args.resume)
        except (CheckpointError, OSError) as err:
            raise SystemExit(f"train: --resume: {err}") from None
    preset = _resolve_preset(args, state)
    kind, net_config, steps, batch, lr, n_samples = PRESETS[preset]
    if state is not None:
        target = args.steps if args.steps is not None else state["config"]["steps"]
        if target <= state["step"]:
            if rank == 0:
                asked = f"--steps {target}" if args.steps is not None else f"its run's --steps {target}"
                print(f"train: nothing to train: {args.resume!r} is already at step {state['step']} and {asked} is not "
                      f"above it; pass a larger --steps to continue. Nothing was written.")
            return
    out = Path(args.out) if args.out is not None else Path(args.resume).parent if args.resume else Path("train_output")
    _agree(_output_problem(args, out) if rank == 0 else None, rank, world, device)
    data = MixtureData(toy_mixture()) if preset == "toy" else TensorData(load_digits())
    try:
        if state is not None:
            changes = {field: getattr(args, attr) for _, field, attr in RESUMABLE}
            trainer = Trainer.resume(args.resume, data, device=device, **changes)
        else:
            config = TrainConfig(
                steps=args.steps or steps, batch_size=args.batch or batch, lr=args.lr or lr, loss=args.loss or "dsm",
                lambda_cp=10.0 if args.lambda_cp is None else args.lambda_cp,
                ema_decay=0.999 if args.ema_decay is None else args.ema_decay, seed=args.seed or 0,
            )
            torch.manual_seed(config.seed)
            trainer = Trainer(make_denoiser(kind, **net_config), data, config, device=device)
    except ValueError as err:
        raise SystemExit(f"train: {err}") from None
    if trainer.changes and rank == 0:
        flags = {field: flag for flag, field, _ in RESUMABLE}
        print(f"train: resuming {args.resume!r} at step {trainer.step} with "
              + ", ".join(f"{flags[k]} {new!r} (the checkpoint's: {old!r})" for k, (old, new) in trainer.changes.items())
              + "; from here on the run differs from its uninterrupted continuation")
    checkpoint = out / "checkpoint.pt"
    progress = None if not args.no_progress else False
    every = args.checkpoint_every or trainer.config.steps
    saved = None  # (path, step) of the last good checkpoint on disk
    if state is not None:
        saved = (Path(args.resume), state["step"])
    try:
        while trainer.step < trainer.config.steps:
            trainer.train(min(trainer.step + every, trainer.config.steps), progress=progress)
            trainer.save(checkpoint, overwrite=args.overwrite)
            saved = (checkpoint, trainer.step)
    except DivergenceError as err:
        lr = trainer.config.lr
        kept = (f"the last good checkpoint {str(saved[0])!r} (step {saved[1]}) is kept; continue from it with a smaller "
                f"learning rate: --resume {str(saved[0])!r} --lr {lr / 10:g}" if saved is not None else
                f"no checkpoint of this run had been written (--checkpoint-every N keeps intermediate ones); try a "
                f"smaller --lr than {lr:g}")
        raise SystemExit(f"train: the run diverged at step {err.step}: {err.reason} (lr {lr:g}). Stopped without "
                         f"writing anything; {kept}") from None
    except OSError as err:
        raise SystemExit(f"train: {err}") from None
    if rank == 0:
        write_log(trainer.log, out / "losses.csv")  # before sampling, so that a failure there keeps the log
    samples = _samples(trainer.ema, preset, args.samples or n_samples, trainer.config.seed, device, progress)
    if rank == 0:
        written = ["checkpoint.pt", "losses.csv"] + (["samples.png"] if _plot(samples.cpu(), preset, out / "samples.png",
                                                                               data) else [])
        last = trainer.log[-1]["loss"] if trainer.log else float("nan")
        print(f"trained {trainer.step} steps ({trainer.config.loss}), last loss {last:.4f}; wrote "
              f"{', '.join(str(out / name) for name in written)}")


def _samples(denoiser, preset: str, n: int, seed: int, device: torch.device, progress: bool | None) -> torch.Tensor | None:
    from fastdiff.grids import get_sigmas
    from fastdiff.train.distributed import sample_distributed

    denoiser.eval()
    sigmas = get_sigmas("karras", SAMPLING_STEPS, 0.002, 80.0).tolist()
    shape = (2,) if preset == "toy" else (1, 8, 8)
    return sample_distributed(denoiser, shape, n, sigmas, "heun", seed=seed, device=device, progress=progress)


def _plot(samples: torch.Tensor, preset: str, path: Path, data) -> bool:
    """Write the PNG; False (and a note) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no samples.png (pip install matplotlib)")
        return False
    if preset == "toy":
        exact = data.draw(samples.shape[0], torch.Generator().manual_seed(0))
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.scatter(exact[:, 0], exact[:, 1], s=2, alpha=0.3, label="exact draws")
        ax.scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5, label="model samples (EMA, Heun)")
        ax.set_aspect("equal")
        ax.legend(loc="upper right", markerscale=4)
    else:
        n = samples.shape[0]
        cols = int(n**0.5) or 1
        rows = -(-n // cols)
        grid = torch.full((rows * 9 + 1, cols * 9 + 1), -1.0)
        for i in range(n):
            r, c = divmod(i, cols)
            grid[r * 9 + 1 : r * 9 + 9, c * 9 + 1 : c * 9 + 9] = samples[i, 0].clamp(-1, 1)
        fig, ax = plt.subplots(figsize=(5, 5))
        ax.imshow(grid.numpy(), cmap="gray_r", vmin=-1, vmax=1)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True
