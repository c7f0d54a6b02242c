"""`python -m fastdiff train`: train a denoiser on a preset and write a checkpoint, the loss log and a PNG of samples.

Presets: `toy` (the 2-D mixture `fastdiff.train.toy_mixture`, exact draws every step, MLP) and `digits`
(scikit-learn's 8x8 digits in [-1, 1], UNet). Under `torchrun --nproc_per_node W -m fastdiff train ...` every rank
trains its share of the batch with DistributedDataParallel (gloo on CPU, NCCL on GPU) and samples its share of the
PNG's samples; rank 0 writes the files.
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
SAMPLING_STEPS = 32  # Heun on the Karras grid 0.002..80


def add_subcommand(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `train` subparser to `commands` (from `parser.add_subparsers()`), with `run` set to `run_train_command`."""
    train = commands.add_parser("train", help="train a denoiser (DSM or CDM) on a preset: checkpoint, loss log, samples")
    train.add_argument("--preset", choices=sorted(PRESETS), default="toy", help="toy (2-D mixture, MLP; default) or digits")
    train.add_argument("--steps", type=int, default=None, help="optimizer steps in total (default toy 3000, digits 3000)")
    train.add_argument("--batch", type=int, default=None, help="global batch size over all ranks (default toy 256, digits 128)")
    train.add_argument("--lr", type=float, default=None, help="Adam learning rate (default toy 1e-3, digits 5e-4)")
    train.add_argument("--loss", choices=("dsm", "cdm"), default="dsm", help="dsm (default) or cdm (DSM + lambda_cp L_cp)")
    train.add_argument("--lambda-cp", type=float, default=10.0, help="weight of the CDM consistency term (default 10)")
    train.add_argument("--ema-decay", type=float, default=0.999, help="EMA decay per step (default 0.999)")
    train.add_argument("--seed", type=int, default=0, help="run seed: initialization, data order, noise (default 0)")
    train.add_argument("--out", default="train_output", help="folder for checkpoint.pt, losses.csv, samples.png")
    train.add_argument(
        "--resume", default=None, help="continue the run in this checkpoint up to --steps (its loss, lr, batch, seed hold)"
    )
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
    if args.resume is not None and not Path(args.resume).is_file():
        raise SystemExit(f"train: --resume {args.resume!r} is not a checkpoint file")


def run_train_command(args: argparse.Namespace) -> int:
    from fastdiff.train.distributed import init_from_env

    _check_args(args)
    kind, net_config, steps, batch, lr, n_samples = PRESETS[args.preset]
    device = init_from_env()
    try:
        _train_and_write(args, kind, net_config, steps, batch, lr, n_samples, device)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def _train_and_write(args: argparse.Namespace, kind: str, net_config: dict, steps: int, batch: int, lr: float,
                     n_samples: int, device: torch.device) -> None:
    from fastdiff.train.data import MixtureData, TensorData, load_digits, toy_mixture
    from fastdiff.train.distributed import rank_and_world
    from fastdiff.train.loop import TrainConfig, Trainer, write_log
    from fastdiff.train.networks import make_denoiser

    rank, _ = rank_and_world()
    data = MixtureData(toy_mixture()) if args.preset == "toy" else TensorData(load_digits())
    steps = args.steps or steps
    if args.resume is not None:
        trainer = Trainer.resume(args.resume, data, device=device, steps=steps)
    else:
        try:
            config = TrainConfig(
                steps=steps, batch_size=args.batch or batch, lr=args.lr or lr, loss=args.loss,
                lambda_cp=args.lambda_cp, ema_decay=args.ema_decay, seed=args.seed,
            )
        except ValueError as err:
            raise SystemExit(f"train: {err}") from None
        torch.manual_seed(args.seed)
        trainer = Trainer(make_denoiser(kind, **net_config), data, config, device=device)
    out = Path(args.out)
    progress = None if not args.no_progress else False
    every = args.checkpoint_every or trainer.config.steps
    while trainer.step < trainer.config.steps:
        trainer.train(min(trainer.step + every, trainer.config.steps), progress=progress)
        trainer.save(out / "checkpoint.pt")
    samples = _samples(trainer.ema, args.preset, args.samples or n_samples, args.seed, device, progress)
    if rank == 0:
        write_log(trainer.log, out / "losses.csv")
        _plot(samples.cpu(), args.preset, out / "samples.png", data)
        last = trainer.log[-1]["loss"] if trainer.log else float("nan")
        print(f"trained {trainer.step} steps ({trainer.config.loss}), last loss {last:.4f}; wrote {out}/checkpoint.pt, "
              f"losses.csv, samples.png")


def _samples(denoiser, preset: str, n: int, seed: int, device: torch.device, progress: bool | None) -> torch.Tensor | None:
    from fastdiff.grids import get_sigmas
    from fastdiff.train.distributed import sample_distributed

    denoiser.eval()
    sigmas = get_sigmas("karras", SAMPLING_STEPS, 0.002, 80.0).tolist()
    shape = (2,) if preset == "toy" else (1, 8, 8)
    return sample_distributed(denoiser, shape, n, sigmas, "heun", seed=seed, device=device, progress=progress)


def _plot(samples: torch.Tensor, preset: str, path: Path, data) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no samples.png (pip install matplotlib)")
        return
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
