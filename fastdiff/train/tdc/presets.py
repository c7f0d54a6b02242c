"""The two TDC presets: a 2-D Gaussian mixture with an MLP, and scikit-learn's 8x8 digits with a small UNet.

toy:    training data = fresh exact draws of `fastdiff.train.data.toy_mixture()` every step; its exact denoiser is the
        reference optimum; 4096 draws rank the groups, 2000 other draws score the search.
digits: `fastdiff.train.data.load_digits()` ([1797, 1, 8, 8] in [-1, 1]) split 80/20 (seeded) into train / held-out;
        the reference optimum is the empirical-data denoiser of the train split (the exact optimum of the training
        objective on a finite set), and the train split ranks the groups.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from fastdiff.train.data import MixtureData, TensorData, TrainData, load_digits, toy_mixture
from fastdiff.train.tdc.difficulty import EmpiricalDenoiser

PRESETS = ("toy", "digits")


@dataclass
class Preset:
    name: str
    kind: str
    net_config: dict
    data: TrainData
    x0: torch.Tensor
    heldout: torch.Tensor
    reference: Callable
    lr: float
    batch_size: int
    base_steps: int
    finetune_steps: int
    proxy_steps: int


def make_preset(name: str, seed: int = 0) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {name!r}")
    gen = torch.Generator().manual_seed(seed)
    if name == "toy":
        gm = toy_mixture()
        x0, heldout = gm.sample(4096, generator=gen).float(), gm.sample(2000, generator=gen).float()
        return Preset("toy", "mlp", {"dim": 2, "widths": (128, 128, 128), "emb_dim": 32}, MixtureData(gm), x0, heldout,
                      gm.denoiser, lr=1e-3, batch_size=256, base_steps=4000, finetune_steps=500, proxy_steps=100)
    images = load_digits()
    order = torch.randperm(images.shape[0], generator=gen)
    cut = int(0.8 * images.shape[0])
    train, heldout = images[order[:cut]], images[order[cut:]]
    config = {"in_channels": 1, "widths": (16, 32), "emb_dim": 32}
    return Preset("digits", "unet", config, TensorData(train), train, heldout, EmpiricalDenoiser(train), lr=1e-3,
                  batch_size=128, base_steps=2000, finetune_steps=250, proxy_steps=40)
