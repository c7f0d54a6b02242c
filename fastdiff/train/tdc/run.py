"""End-to-end TDC on a preset: stage 1 (base model on all noise levels), the equal-steps baseline (the base model
trained on all noise levels for as many steps as stage 2 fine-tunes in total, with the same trainer settings), and
stage 2 (`pipeline.divide_and_conquer`). All training goes through `fastdiff.train.Trainer` (`training.loop_trainer`)."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch

from fastdiff.train.networks import EDMPrecond, make_denoiser
from fastdiff.train.tdc.pipeline import TDCConfig, TDCResult, divide_and_conquer
from fastdiff.train.tdc.presets import Preset
from fastdiff.train.tdc.training import loop_trainer

BASE_EMA = 0.999  # stage 1
FINETUNE_EMA = 0.99  # the baseline's continued training and the group fine-tunes alike; proxies use raw weights


@dataclass
class TDCRun:
    base: EDMPrecond
    baseline: EDMPrecond
    tdc: TDCResult
    base_steps: int


def run_preset(preset: Preset, config: TDCConfig, base_steps: int | None = None, progress: bool | None = None) -> TDCRun:
    """Stage 1 for `base_steps` (default the preset's), then the baseline (N * finetune_steps more steps on all noise
    levels) and stage 2, all seeded from `config.seed`."""
    steps = preset.base_steps if base_steps is None else base_steps
    options = {"lr": preset.lr, "batch_size": preset.batch_size, "P_mean": config.P_mean, "P_std": config.P_std}
    torch.manual_seed(config.seed)
    base = make_denoiser(preset.kind, **preset.net_config)
    base = loop_trainer(preset.data, ema_decay=BASE_EMA, **options)(base, (0.0, math.inf), steps, config.seed)
    finetune = loop_trainer(preset.data, ema_decay=FINETUNE_EMA, **options)
    proxy = loop_trainer(preset.data, ema_decay=0.0, **options)
    baseline = finetune(copy.deepcopy(base), (0.0, math.inf), config.n_groups * config.finetune_steps, config.seed + 1)
    result = divide_and_conquer(base, finetune, preset.x0, preset.heldout, config, reference=preset.reference,
                                proxy_train=proxy, progress=progress)
    return TDCRun(base, baseline, result, steps)
