"""Save and load a TDC `GroupedDenoiser` of `fastdiff.train.networks` denoisers: one file holding each group's
sigma range, architecture config and weights (`make_denoiser(**config)` rebuilds each model)."""

from __future__ import annotations

from pathlib import Path

import torch

from fastdiff.models import GroupedDenoiser
from fastdiff.train.networks import EDMPrecond, make_denoiser


def save_grouped(grouped: GroupedDenoiser, path: str | Path) -> None:
    models = list(grouped.denoisers)
    if not all(isinstance(m, EDMPrecond) for m in models):
        raise TypeError("save_grouped needs every group's denoiser to be a fastdiff.train.networks.EDMPrecond")
    edges = grouped.edges
    torch.save({"groups": [{"lo": edges[g], "hi": edges[g + 1], "config": m.config(), "state_dict": m.state_dict()}
                           for g, m in enumerate(models)]}, path)


def load_grouped(path: str | Path, map_location: str | torch.device = "cpu") -> GroupedDenoiser:
    saved = torch.load(path, map_location=map_location, weights_only=True)
    groups = []
    for entry in saved["groups"]:
        model = make_denoiser(**entry["config"])
        model.load_state_dict(entry["state_dict"])
        groups.append((entry["lo"], entry["hi"], model.eval()))
    return GroupedDenoiser(groups)
