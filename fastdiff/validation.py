"""Argument checks shared by the public entry points. Each error names the argument."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def values_checkable(t: torch.Tensor) -> bool:
    """Whether a check may read tensor values on the host: not while torch.compile traces (it would
    break the graph) nor while a CUDA graph captures (a sync is illegal there)."""
    if torch.compiler.is_compiling():
        return False
    return not (t.is_cuda and torch.cuda.is_current_stream_capturing())


def check_sample(x: object, name: str = "x") -> torch.Tensor:
    """A floating-point `[B, ...]` tensor with finite entries (one host sync, before any loop;
    skipped under torch.compile and CUDA graph capture, see `values_checkable`)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [B, ...], got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype (float16, bfloat16, float32 or float64), got {x.dtype}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape [B, ...] with B >= 1, got shape {tuple(x.shape)}")
    if values_checkable(x) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return x


def check_sigmas(sigmas: object, device: torch.device, name: str = "sigmas") -> torch.Tensor:
    """The checked grid as a tensor on `device` (see `check_grid`)."""
    return check_grid(sigmas, device, name)[1]


def check_grid(
    sigmas: object, device: torch.device, name: str = "sigmas", dtype: torch.dtype = torch.float64
) -> tuple[list[float], torch.Tensor]:
    """A 1-D, non-negative, strictly decreasing grid of at least two entries, finite except that the first entry may be
    +inf (the flow time t = 1, where the state is the unit noise), its finite entries representable in `dtype` (the
    solver's state dtype: float32 holds sigmas up to 3.4e38).

    Returns (the grid as host floats, the grid as a tensor on `device`: float64 when given as a
    Python sequence). A tensor is read to the host once (one sync); a sequence of floats needs no
    sync, which is what torch.compile and CUDA graph capture want. A tensor on another device than
    the sample is an error, not a silent copy.
    """
    if isinstance(sigmas, torch.Tensor):
        if sigmas.device != device:
            raise ValueError(f"{name} is on {sigmas.device} but x is on {device}; put both on the same device")
        if not sigmas.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {sigmas.dtype}")
        if sigmas.ndim != 1:
            raise ValueError(f"{name} must be 1-D, got shape {tuple(sigmas.shape)}")
        if not values_checkable(sigmas):
            raise ValueError(f"{name} must be a list of floats under torch.compile or CUDA graph capture (a tensor needs a sync)")
        host, grid = sigmas.detach().to("cpu", torch.float64).tolist(), sigmas
    elif isinstance(sigmas, Sequence) and not isinstance(sigmas, str):
        host = [_as_float(s, name) for s in sigmas]
        grid = None
    else:
        raise TypeError(f"{name} must be a 1-D tensor or a sequence of floats, got {type(sigmas).__name__}")
    if len(host) < 2:
        raise ValueError(f"{name} needs at least two entries (start and end of one step), got {len(host)}")
    for k, s in enumerate(host):
        if not (math.isfinite(s) or (k == 0 and s == math.inf)):
            raise ValueError(f"{name} contains NaN or Inf: {name}[{k}] = {s}; only {name}[0] may be inf (the flow time t = 1)")
    finite = host[1:] if math.isinf(host[0]) else host
    if min(finite) < 0:
        raise ValueError(f"{name} must be non-negative, got minimum {min(finite):g}")
    largest = max(finite)
    if largest > torch.finfo(dtype).max:
        raise ValueError(f"{name} must fit in the solver's {dtype} state (at most {torch.finfo(dtype).max:g}), got {largest:g}")
    if not all(b < a for a, b in zip(host[:-1], host[1:], strict=True)):
        raise ValueError(f"{name} must be strictly decreasing (noise level falls at every step)")
    if 0.0 in host[:-1]:
        raise ValueError(f"{name} may contain 0 only as its last entry")
    if grid is None:
        grid = torch.tensor(host, dtype=torch.float64, device=device)
    return host, grid


def _as_float(value: object, name: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} entries must be numbers, got a tensor of shape {tuple(value.shape)}")
        return float(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} entries must be numbers, got {type(value).__name__}")
    return float(value)


def check_number(value: object, name: str, low: float = 0.0, high: float = math.inf, allow_inf: bool = False) -> float:
    """A real number in [low, high]; finite unless `allow_inf` (an infinite coefficient makes every output NaN)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not allow_inf):
        raise ValueError(f"{name} must be a finite number, got {value}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be in [{low}, {high}], got {value}")
    return value


def check_positive(value: object, name: str) -> float:
    """A finite real number > 0; anything else, a non-number included, raises ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def check_flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool (True or False), got {type(value).__name__}")
    return value


def check_progress(value: object) -> bool | None:
    """`progress`: True, False, or None (shown only on a terminal)."""
    if value is not None and not isinstance(value, bool):
        raise TypeError(f"progress must be True, False or None (only on a terminal), got {type(value).__name__}")
    return value


def check_int_in(value: object, name: str, low: int, high: int) -> int:
    """An int (not a bool) in [low, high]; anything else raises ValueError naming `name` and the range."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an int in [{low}, {high}], got {value!r}")
    return value


def check_positive_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value
