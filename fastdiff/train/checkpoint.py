"""Checkpoint files of `fastdiff.train`: written without ever losing the previous one, read with errors that say which
file is wrong and how.

- `write_atomic(obj, path, overwrite=...)` writes `path.tmp` and renames it over `path`, so a crash or a full disk never
  leaves half a checkpoint; a failed write removes the temporary file and leaves an existing `path` untouched. An
  existing `path` is only replaced with `overwrite=True`.
- `read_file(path, what)` loads with `weights_only=True` (a checkpoint never runs code) and turns torch's errors into a
  `CheckpointError` naming the file: corrupt or truncated, or not a fastdiff file (objects other than tensors).
- `load_checkpoint(path)` reads a `Trainer` checkpoint and checks it: a dict with every key `Trainer.save` writes, a
  valid config and architecture, finite weights.
"""

from __future__ import annotations

import os
import pickle
import re
from collections.abc import Iterable
from pathlib import Path

import torch

from fastdiff.train.config import TrainConfig

FORMAT = "fastdiff.train checkpoint 1"
KEYS = ("model", "ema", "optimizer", "step", "log", "rng", "config", "denoiser")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, not a fastdiff checkpoint, incomplete, or not matching what
    loads it. The message names the file."""


def write_atomic(obj: object, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """torch.save `obj` to `path` through `path.tmp` and a rename. Refuses an existing `path` unless `overwrite`;
    a failed write removes the temporary file and re-raises with the path named, the previous `path` intact."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"checkpoint path {str(path)!r} is a directory; expected a file name")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{str(path)!r} already exists; pass overwrite=True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise OSError(err.errno, f"could not write the checkpoint {str(path)!r} ({err.strerror or err}); "
                                     f"the previous file, if any, is unchanged") from err
        raise
    return path


def read_file(path: str | os.PathLike, what: str = "checkpoint") -> object:
    """torch.load(path, weights_only=True) on the CPU, with every failure a `CheckpointError` (or FileNotFoundError)
    naming the file and the problem."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    if not path.is_file():
        raise CheckpointError(f"{what} {str(path)!r} is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)  # RNG states must stay CPU tensors
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if line.strip()]
        foreign = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if foreign is not None:
            raise CheckpointError(
                f"{what} {str(path)!r} is not a fastdiff {what}: it holds Python objects other than tensors and plain "
                f"containers (a {foreign.group(1)}), which fastdiff never unpickles"
            ) from None
        detail = next((line for line in lines if line.startswith("Unsupported")), lines[0] if lines else "")
        raise CheckpointError(_corrupt(path, what, pickle.UnpicklingError(detail))) from None
    except (EOFError, KeyError, RuntimeError, ValueError, OSError, UnicodeDecodeError, AttributeError, IndexError) as err:
        raise CheckpointError(_corrupt(path, what, err)) from None


def _corrupt(path: Path, what: str, err: BaseException) -> str:
    reason = str(err).splitlines()[0] if str(err) else "unexpected end of file" if isinstance(err, EOFError) else ""
    return (f"{what} {str(path)!r} is corrupt or truncated ({path.stat().st_size} bytes; torch.load: "
            f"{type(err).__name__}{': ' + reason[:200] if reason else ''}); expected a file written by torch.save")


def first_nonfinite(named: Iterable[tuple[str, torch.Tensor | None]]) -> str | None:
    """The name of the first floating tensor with a NaN or infinity (one device sync when all are finite)."""
    items = [(n, t) for n, t in named if isinstance(t, torch.Tensor) and t.is_floating_point()]
    if not items:
        return None
    flags = torch.stack([torch.isfinite(t).all().to(items[0][1].device) for _, t in items])
    if bool(flags.all()):
        return None
    return next(n for (n, _), ok in zip(items, flags.tolist(), strict=True) if not ok)


def arch_string(config: dict) -> str:
    """An architecture config as `kind='mlp', dim=2, ...`."""
    return ", ".join(f"{k}={v!r}" for k, v in config.items())


def check_weights(saved: dict, model: torch.nn.Module, where: str) -> None:
    """Raise a CheckpointError starting with `where` unless the state dict `saved` has exactly the parameter names and
    shapes of `model` (an EDMPrecond, named by its config) and only finite values."""
    arch = arch_string(model.config())
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    absent = [k for k in expected if k not in saved]
    extra = [k for k in saved if k not in expected]
    if absent or extra:
        raise CheckpointError(f"{where} do not fit the architecture ({arch}): missing {absent[:5]}, unexpected "
                              f"{extra[:5]}")
    for k, shape in expected.items():
        got = tuple(saved[k].shape) if isinstance(saved[k], torch.Tensor) else type(saved[k]).__name__
        if got != shape:
            raise CheckpointError(f"{where}: parameter {k!r} has shape {got}, but the architecture ({arch}) needs {shape}")
    bad = first_nonfinite(saved.items())
    if bad is not None:
        raise CheckpointError(f"{where}: parameter {bad!r} holds NaN or infinite values (the run that wrote it had "
                              f"diverged); use an earlier checkpoint")


def _describe(state: dict) -> str:
    keys = sorted(map(str, state))
    shown = ", ".join(repr(k) for k in keys[:6]) + (", ..." if len(keys) > 6 else "")
    if "groups" in state:
        return f"a TDC grouped-model file (keys {shown}); load it with fastdiff.train.tdc.load_grouped"
    if state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return f"a bare state_dict (keys {shown}), not a Trainer checkpoint"
    return f"keys {shown}"


def load_checkpoint(path: str | os.PathLike) -> dict:
    """The checked contents of a `Trainer.save` checkpoint (module docstring); every problem is a `CheckpointError`
    naming `path`."""
    from fastdiff.train.networks import make_denoiser

    name = repr(str(path))
    state = read_file(path, "checkpoint")
    expected = f"expected a dict with keys {list(KEYS)} written by fastdiff.train.Trainer.save"
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {name} is not a fastdiff training checkpoint: it holds a "
                              f"{type(state).__name__}; {expected}")
    missing = [k for k in KEYS if k not in state]
    if len(missing) == len(KEYS):
        raise CheckpointError(f"checkpoint {name} is not a fastdiff training checkpoint: it is {_describe(state)}; "
                              f"{expected}")
    if "format" in state and state["format"] != FORMAT:
        raise CheckpointError(f"checkpoint {name} has format {state['format']!r}; this fastdiff reads {FORMAT!r}")
    if missing:
        raise CheckpointError(f"checkpoint {name} is incomplete: missing keys {missing}; {expected}")
    for key, kind in (("model", dict), ("ema", dict), ("optimizer", dict), ("log", list), ("rng", dict),
                      ("config", dict), ("denoiser", dict)):
        if not isinstance(state[key], kind):
            raise CheckpointError(f"checkpoint {name}: {key!r} must be a {kind.__name__}, got "
                                  f"{type(state[key]).__name__}")
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise CheckpointError(f"checkpoint {name}: 'step' must be an int >= 0, got {step!r}")
    if len(state["log"]) != step:
        raise CheckpointError(f"checkpoint {name}: its log has {len(state['log'])} entries for step {step}; "
                              f"expected one per step")
    if not isinstance(state["rng"].get("torch"), torch.Tensor) or state["rng"]["torch"].dtype != torch.uint8:
        raise CheckpointError(f"checkpoint {name}: 'rng' must hold the torch RNG state (a uint8 tensor) under 'torch'")
    try:
        TrainConfig(**state["config"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {name}: its 'config' {state['config']} is not a valid TrainConfig ({err})") \
            from None
    try:
        with torch.device("meta"):  # shapes only
            model = make_denoiser(**state["denoiser"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"checkpoint {name}: its 'denoiser' {state['denoiser']} is not a valid architecture "
                              f"({err})") from None
    for key in ("model", "ema"):
        check_weights(state[key], model, f"checkpoint {name}: its {key!r} weights")
    moments = state["optimizer"].get("state", {})
    bad = first_nonfinite((f"{index}.{k}", v) for index, entry in moments.items() if isinstance(entry, dict)
                          for k, v in entry.items())
    if bad is not None:
        raise CheckpointError(f"checkpoint {name}: the optimizer state {bad!r} holds NaN or infinite values (the run "
                              f"that wrote it had diverged); resume from an earlier checkpoint")
    return state
