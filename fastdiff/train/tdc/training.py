"""TDC's training steps run through `fastdiff.train.Trainer` (Adam, EMA, counter-stream batches, DDP); only the
objective of a group fine-tune differs: DSM with sigma restricted to the group (`noise_levels.group_dsm_loss`).

`loop_trainer(data, ...)` returns `train(denoiser, sigma_range, steps, seed) -> denoiser`: a fresh Trainer (fresh Adam
state) on `denoiser` for `steps` steps, on all noise levels when sigma_range is (0, inf) (the plain `dsm` loss) and on
the restricted law otherwise; it returns the EMA weights (the raw weights when ema_decay is 0), trainable again.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from fastdiff.train.config import TrainConfig
from fastdiff.train.data import TrainData
from fastdiff.train.loop import Trainer
from fastdiff.train.networks import EDMPrecond
from fastdiff.train.tdc.noise_levels import group_dsm_loss

SigmaRange = tuple[float, float]
TrainFn = Callable[[EDMPrecond, SigmaRange, int, int], EDMPrecond]


class _GroupObjective(nn.Module):
    def __init__(self, denoiser: EDMPrecond, config: TrainConfig, sigma_range: SigmaRange):
        super().__init__()
        self.denoiser, self.config, self.sigma_range = denoiser, config, sigma_range

    def forward(self, x0: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        lo, hi = self.sigma_range
        return group_dsm_loss(self.denoiser, x0, lo, hi, P_mean=self.config.P_mean, P_std=self.config.P_std,
                              sigma_data=self.denoiser.sigma_data, seed=keys)


class GroupTrainer(Trainer):
    """`fastdiff.train.Trainer` whose objective is DSM restricted to the noise levels [lo, hi] of one group."""

    def __init__(self, denoiser: EDMPrecond, data: TrainData, config: TrainConfig, sigma_range: SigmaRange, *,
                 device: torch.device | str = "cpu"):
        if config.loss != "dsm":
            raise ValueError(f"a group fine-tune trains the dsm loss, got loss={config.loss!r}")
        self.sigma_range = sigma_range
        super().__init__(denoiser, data, config, device=device)

    def build_objective(self) -> nn.Module:
        return _GroupObjective(self.model, self.config, self.sigma_range)


def loop_trainer(
    data: TrainData, *, lr: float = 1e-3, batch_size: int = 256, ema_decay: float = 0.0, P_mean: float = -1.2,
    P_std: float = 1.2, device: torch.device | str = "cpu",
) -> TrainFn:
    """train(denoiser, sigma_range, steps, seed) (module docstring); the denoiser is trained in place."""

    def train(denoiser: EDMPrecond, sigma_range: SigmaRange, steps: int, seed: int) -> EDMPrecond:
        config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, ema_decay=ema_decay, seed=seed, P_mean=P_mean,
                             P_std=P_std)
        lo, hi = sigma_range
        if lo == 0 and math.isinf(hi):
            trainer = Trainer(denoiser, data, config, device=device)
        else:
            trainer = GroupTrainer(denoiser, data, config, (lo, hi), device=device)
        trainer.train(progress=False)
        return (trainer.ema if ema_decay > 0 else trainer.model).requires_grad_(True).eval()

    return train

