"""Save and load a TDC `GroupedDenoiser` of `fastdiff.train.networks` denoisers: one file holding each group's
sigma range, architecture config and weights (`make_denoiser(**config)` rebuilds each model).

`save_grouped` writes through a temporary file and a rename (a failed write leaves the previous file intact) and
replaces an existing file only with `overwrite=True`; `load_grouped` names the file and what is wrong with it
(`fastdiff.train.CheckpointError`): corrupt, not a grouped-model file, missing keys, a group's weights not fitting its
architecture (naming the group and the parameter), NaN weights."""

from __future__ import annotations

from pathlib import Path

import torch

from fastdiff.models import GroupedDenoiser
from fastdiff.train.checkpoint import CheckpointError, check_weights, first_nonfinite, read_file, write_atomic
from fastdiff.train.networks import EDMPrecond, make_denoiser

FORMAT = "fastdiff.train.tdc grouped model 1"
ENTRY_KEYS = ("lo", "hi", "config", "state_dict")


def save_grouped(grouped: GroupedDenoiser, path: str | Path, *, overwrite: bool = False) -> None:
    """Write `grouped` to `path` (module docstring); FileExistsError for an existing `path` unless `overwrite`."""
    models = list(grouped.denoisers)
    if not all(isinstance(m, EDMPrecond) for m in models):
        raise TypeError("save_grouped needs every group's denoiser to be a fastdiff.train.networks.EDMPrecond")
    for g, m in enumerate(models):
        bad = first_nonfinite(m.state_dict().items())
        if bad is not None:
            raise ValueError(f"not saving {str(path)!r}: group {g}'s parameter {bad!r} is NaN or infinite")
    edges = grouped.edges
    write_atomic({"format": FORMAT, "groups": [{"lo": edges[g], "hi": edges[g + 1], "config": m.config(),
                                                "state_dict": m.state_dict()} for g, m in enumerate(models)]},
                 path, overwrite=overwrite)


def load_grouped(path: str | Path, map_location: str | torch.device = "cpu") -> GroupedDenoiser:
    """The GroupedDenoiser saved at `path`, its models in eval mode on `map_location`."""
    name = repr(str(path))
    saved = read_file(path, "grouped-model file")
    expected = f"expected a dict {{'groups': [{{{', '.join(repr(k) for k in ENTRY_KEYS)}}}, ...]}} written by save_grouped"
    if not isinstance(saved, dict) or "groups" not in saved:
        what = type(saved).__name__ if not isinstance(saved, dict) else f"a dict with keys {sorted(map(str, saved))[:6]}"
        hint = ("; it is a training checkpoint: resume it with fastdiff.train.Trainer.resume"
                if isinstance(saved, dict) and {"model", "denoiser"} <= set(saved) else "")
        raise CheckpointError(f"grouped-model file {name} is not a TDC grouped-model file: it holds {what}{hint}; "
                              f"{expected}")
    if "format" in saved and saved["format"] != FORMAT:
        raise CheckpointError(f"grouped-model file {name} has format {saved['format']!r}; this fastdiff reads {FORMAT!r}")
    if not isinstance(saved["groups"], list) or not saved["groups"]:
        raise CheckpointError(f"grouped-model file {name}: 'groups' must be a non-empty list, got {saved['groups']!r:.80}")
    groups = []
    for g, entry in enumerate(saved["groups"]):
        missing = [k for k in ENTRY_KEYS if not isinstance(entry, dict) or k not in entry]
        if missing:
            raise CheckpointError(f"grouped-model file {name}: group {g} is missing keys {missing}; {expected}")
        try:
            model = make_denoiser(**entry["config"])
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"grouped-model file {name}: group {g}'s config {entry['config']} is not a valid "
                                  f"architecture ({err})") from None
        check_weights(entry["state_dict"], model, f"grouped-model file {name}: group {g}'s weights")
        model.load_state_dict(entry["state_dict"])
        groups.append((entry["lo"], entry["hi"], model.to(map_location).eval()))
    try:
        return GroupedDenoiser(groups)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"grouped-model file {name}: its sigma ranges do not form groups ({err})") from None
