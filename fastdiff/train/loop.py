"""The training loop: Adam, an EMA of the weights, checkpoints that resume to the same result, DDP.

Step t (counted from 0) of a run with seed s is a fixed function of (s, t) and the weights:
- the global batch of `batch_size` data points is drawn from a generator seeded by (s, t) on every rank, and rank
  r keeps its contiguous slice (`fastdiff.train.distributed.shard`);
- the loss's noise for global sample i comes from the counter stream keyed by (s, t, i) (`fastdiff.train.draws`).
So W ranks with batch b / W each see exactly the samples and noise of one process with batch b; DDP averages the
rank gradients (each rank's loss is the mean over its slice), which gives the gradient of the global mean.
A resumed run restores weights, EMA, Adam state, step, log and torch's RNG states, so it continues bitwise as the
uninterrupted run would (unless `Trainer.resume` is asked to change a hyperparameter, which it then applies).

Nothing is lost silently: a step whose loss or gradients are NaN or infinite raises `DivergenceError` before the
optimizer applies it (the trainer keeps the last good weights), `save` never replaces a file it did not write itself
unless told to (`overwrite=True`), a failed save leaves the previous checkpoint intact, and `resume` checks the file
(`fastdiff.train.checkpoint.load_checkpoint`) and says what is wrong with it.

EMA: after optimizer step t (from 0), ema <- beta_t ema + (1 - beta_t) theta with beta_t = min(ema_decay, (1 + t) / (10 + t)),
the usual warm-up, so that a short run's EMA is not dominated by the initialization.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fastdiff.noise import seed_keys, splitmix64
from fastdiff.progress import progress_range
from fastdiff.train.checkpoint import FORMAT, first_nonfinite, load_checkpoint, write_atomic
from fastdiff.train.config import TrainConfig
from fastdiff.train.data import TrainData
from fastdiff.train.distributed import rank_and_world, shard
from fastdiff.train.losses import cdm_loss, dsm_loss
from fastdiff.train.networks import EDMPrecond, make_denoiser


class DivergenceError(RuntimeError):
    """Training produced a NaN or infinite loss, gradient or weight at optimizer step `step` (counted from 0).
    For a loss or gradient the step was not applied: the trainer still holds the weights, EMA, optimizer state and log
    after step `step - 1` (`weights_intact` is True), so `save` writes the last good state."""

    def __init__(self, step: int, reason: str, lr: float, weights_intact: bool):
        self.step, self.reason, self.lr, self.weights_intact = step, reason, lr, weights_intact
        after = ("the trainer keeps the weights from before this step" if weights_intact else
                 "the weights are no longer finite; go back to a saved checkpoint")
        super().__init__(f"training diverged at step {step}: {reason} (lr {lr:g}); {after}")


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay ema + (1 - decay) model for every parameter; buffers are copied."""
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p, 1.0 - decay)
    for e, b in zip(ema.buffers(), model.buffers(), strict=True):
        e.copy_(b)


def ema_decay_at(decay: float, step: int) -> float:
    """The EMA decay after optimizer step `step` (from 0): min(decay, (1 + step) / (10 + step))."""
    return min(decay, (1 + step) / (10 + step))


def step_seed(seed: int, step: int) -> int:
    """The 64-bit seed of optimizer step `step` of a run with seed `seed`."""
    return splitmix64(splitmix64(seed) ^ step)


class _Objective(nn.Module):
    """The loss as a module, so that DDP sees one forward (and one backward) per step however many times the loss
    evaluates the denoiser."""

    def __init__(self, denoiser: EDMPrecond, config: TrainConfig):
        super().__init__()
        self.denoiser = denoiser
        self.config = config

    def forward(self, x0: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        c = self.config
        common = {"P_mean": c.P_mean, "P_std": c.P_std, "sigma_data": self.denoiser.sigma_data, "seed": keys}
        if c.loss == "dsm":
            return dsm_loss(self.denoiser, x0, **common)
        return cdm_loss(self.denoiser, x0, lambda_cp=c.lambda_cp, **common)


class Trainer:
    """Trains `denoiser` on `data` under `config`, single-process or on every rank of the default process group
    (DistributedDataParallel; gloo on CPU, NCCL on GPU). `batch_size` must be divisible by the world size.

    `train()` runs to `config.steps`; `log` holds {"step", "loss"} per step (the loss averaged over ranks);
    `ema` is the EMA copy of the denoiser; `save(path)` / `Trainer.resume(path, data)` checkpoint and resume.
    """

    def __init__(self, denoiser: EDMPrecond, data: TrainData, config: TrainConfig, *, device: torch.device | str = "cpu"):
        if not isinstance(denoiser, EDMPrecond):
            raise TypeError(f"denoiser must be a fastdiff.train.networks.EDMPrecond, got {type(denoiser).__name__}")
        if not isinstance(data, TrainData):
            raise TypeError(f"data must be a fastdiff.train.data.TrainData, got {type(data).__name__}")
        if not isinstance(config, TrainConfig):
            raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
        self.rank, self.world = rank_and_world()
        if config.batch_size % self.world:
            raise ValueError(f"batch_size must be divisible by the world size {self.world}, got {config.batch_size}")
        shape = getattr(data, "shape", None)
        if shape is not None:
            try:
                denoiser.check_sample_shape(shape)
            except ValueError as err:
                raise ValueError(f"data draws samples of shape {tuple(shape)}, which the denoiser does not take: {err}") \
                    from None
        self.device = torch.device(device)
        self.data = data
        self.config = config
        self.model = denoiser.to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.step = 0
        self.log: list[dict] = []
        self.changes: dict[str, tuple] = {}  # resume(): {field: (checkpoint's value, value applied)}
        self._own: set[Path] = set()  # files this trainer wrote or resumed from: save may replace them
        objective = self.build_objective()
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._objective = DistributedDataParallel(objective, device_ids=ids)
        else:
            self._objective = objective

    def build_objective(self) -> nn.Module:
        """The module whose forward(x0 [b, ...], keys [b] int64 per-sample seeds) returns this rank's mean loss; DDP wraps
        it. Subclasses override it to train another objective (called once, from __init__, after model and config
        are set)."""
        return _Objective(self.model, self.config)

    def _batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's slice of step `step`'s global batch and the per-sample loss seeds of that slice."""
        seed = step_seed(self.config.seed, step)
        generator = torch.Generator().manual_seed(seed & ((1 << 63) - 1))
        start, end = shard(self.config.batch_size, self.rank, self.world)
        x0 = self.data.draw(self.config.batch_size, generator)[start:end].to(self.device)
        return x0, seed_keys(seed, self.config.batch_size, self.device)[start:end]

    def train_step(self) -> float:
        """One optimizer step and EMA update; returns the loss averaged over ranks. Raises `DivergenceError` (on every
        rank alike: the loss is averaged and DDP averages the gradients) instead of applying a non-finite loss or
        gradient, and if the update made a weight non-finite."""
        self.model.train()
        x0, keys = self._batch(self.step)
        loss = self._objective(x0, keys)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        value = loss.detach()
        if self.world > 1:
            dist.all_reduce(value)
            value = value / self.world
        value = float(value)
        if not math.isfinite(value):
            raise DivergenceError(self.step, f"the loss is {value}", self.config.lr, True)
        bad = first_nonfinite((name, p.grad) for name, p in self.model.named_parameters())
        if bad is not None:
            raise DivergenceError(self.step, f"the gradient of {bad!r} is NaN or infinite", self.config.lr, True)
        self.optimizer.step()
        bad = first_nonfinite(self.model.named_parameters())
        if bad is not None:
            raise DivergenceError(self.step, f"the update made {bad!r} NaN or infinite", self.config.lr, False)
        ema_update(self.ema, self.model, ema_decay_at(self.config.ema_decay, self.step))
        self.log.append({"step": self.step, "loss": value})
        self.step += 1
        return value

    def train(self, steps: int | None = None, *, progress: bool | None = None) -> list[dict]:
        """Train until `steps` optimizer steps have been taken in total (default `config.steps`); returns the log."""
        target = self.config.steps if steps is None else steps
        if isinstance(target, bool) or not isinstance(target, int) or target < self.step:
            raise ValueError(f"steps must be an int >= the steps already taken ({self.step}), got {target!r}")
        for _ in progress_range(target - self.step, progress if self.rank == 0 else False, desc=f"training ({self.config.loss})"):
            self.train_step()
        return self.log

    def state_dict(self) -> dict:
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        return {
            "format": FORMAT,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "log": list(self.log),
            "rng": rng,
            "config": self.config.to_dict(),
            "denoiser": self.model.config(),
        }

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Write the checkpoint (rank 0 only) through a temporary file and a rename, so a crash never leaves half a
        checkpoint and a failed write leaves the previous file intact. An existing file is replaced only if this
        trainer wrote it or was resumed from it, or with `overwrite=True` (else FileExistsError); non-finite weights
        are never written (ValueError). Every rank waits until rank 0 is done and raises if rank 0 failed."""
        path = Path(path)
        error: Exception | None = None
        if self.rank == 0:
            try:
                bad = first_nonfinite(self.model.state_dict().items())
                if bad is not None:
                    raise ValueError(f"not saving {str(path)!r}: the model's {bad!r} is NaN or infinite")
                write_atomic(self.state_dict(), path, overwrite=overwrite or path.resolve() in self._own)
            except Exception as err:
                error = err
        if self.world > 1:
            failed = torch.tensor([0 if error is None else 1], device=self.device)
            dist.all_reduce(failed)
            if error is None and failed.item():
                raise RuntimeError(f"rank 0 could not save the checkpoint {str(path)!r} (its error says why)")
        if error is not None:
            raise error
        self._own.add(path.resolve())

    def load_state_dict(self, state: dict, *, changed: Sequence[str] = ()) -> None:
        """Restore a `state_dict()`. Its config must equal this trainer's except for `steps` and the fields named in
        `changed`; the learning rate is this trainer's."""
        mine = self.config.to_dict()
        differ = [k for k in mine if k != "steps" and k not in changed and state["config"].get(k) != mine[k]]
        if differ:
            raise ValueError("checkpoint config differs from this trainer's in " +
                             ", ".join(f"{k} ({state['config'].get(k)!r} vs {mine[k]!r})" for k in differ))
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:
            group["lr"] = self.config.lr
        self.step = state["step"]
        self.log = list(state["log"])
        torch.set_rng_state(state["rng"]["torch"])
        if "cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng"]["cuda"])

    @classmethod
    def resume(cls, path: str | os.PathLike, data: TrainData, *, device: torch.device | str = "cpu", **changes) -> Trainer:
        """A trainer restored from the checkpoint at `path`: architecture and config from the checkpoint, checked by
        `load_checkpoint` (a `CheckpointError` names the file and the problem).

        `changes` are TrainConfig fields to change (None keeps the checkpoint's value): `steps` extends the run (it
        may not be below the checkpoint's step); any other change (lr, loss, ...) is applied from the next step on
        and recorded in `trainer.changes` as {field: (checkpoint's value, new value)}, and the run then no longer
        continues as the uninterrupted one would."""
        fields = [f.name for f in dataclasses.fields(TrainConfig)]
        unknown = sorted(set(changes) - set(fields))
        if unknown:
            raise TypeError(f"resume got unknown TrainConfig fields {unknown}; expected some of {fields}")
        state = load_checkpoint(path)
        changes = {k: v for k, v in changes.items() if v is not None}
        steps = changes.get("steps")
        if isinstance(steps, int) and not isinstance(steps, bool) and steps < state["step"]:
            raise ValueError(f"steps must be >= the step {state['step']} of checkpoint {str(path)!r} (a run cannot go "
                             f"back), got {steps}")
        config = TrainConfig(**{**state["config"], **changes})
        try:
            trainer = cls(make_denoiser(**state["denoiser"]), data, config, device=device)
        except ValueError as err:
            raise ValueError(f"checkpoint {str(path)!r}: {err}") from None
        trainer.load_state_dict(state, changed=list(changes))
        trainer.changes = {k: (state["config"][k], v) for k, v in changes.items() if k != "steps" and state["config"][k] != v}
        trainer._own.add(Path(path).resolve())
        return trainer


def write_log(log: Sequence[dict], path: str | os.PathLike) -> None:
    """The loss log as CSV with columns step, loss."""
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["step", "loss"])
        writer.writeheader()
        writer.writerows(log)
