"""Argument checks shared by the public entry points. Each error names the argument."""

from __future__ import annotations

from collections.abc import Sequence

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_sample(x: object, name: str = "x") -> torch.Tensor:
    """A floating-point `[B, ...]` tensor with finite entries (one host sync, before any loop)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of shape [B, ...], got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must have a floating dtype (float16, bfloat16, float32 or float64), got {x.dtype}")
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape [B, ...] with B >= 1, got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    return x


def check_sigmas(sigmas: object, device: torch.device, name: str = "sigmas") -> torch.Tensor:
    """A 1-D, finite, non-negative, strictly decreasing grid of at least two entries.

    Returns it as a tensor on `device` (float64 when given as a Python sequence). A tensor on
    another device than the sample is an error, not a silent copy.
    """
    if isinstance(sigmas, torch.Tensor):
        if sigmas.device != device:
            raise ValueError(f"{name} is on {sigmas.device} but x is on {device}; put both on the same device")
        if not sigmas.dtype.is_floating_point:
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {sigmas.dtype}")
        grid = sigmas
    elif isinstance(sigmas, Sequence) and not isinstance(sigmas, str):
        grid = torch.as_tensor([float(s) for s in sigmas], dtype=torch.float64, device=device)
    else:
        raise TypeError(f"{name} must be a 1-D tensor or a sequence of floats, got {type(sigmas).__name__}")
    if grid.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {tuple(grid.shape)}")
    if grid.numel() < 2:
        raise ValueError(f"{name} needs at least two entries (start and end of one step), got {grid.numel()}")
    host = grid.detach().to("cpu", torch.float64)
    if not bool(torch.isfinite(host).all()):
        raise ValueError(f"{name} contains NaN or Inf")
    if bool((host < 0).any()):
        raise ValueError(f"{name} must be non-negative, got minimum {host.min().item():g}")
    if not bool((host[1:] < host[:-1]).all()):
        raise ValueError(f"{name} must be strictly decreasing (noise level falls at every step)")
    if bool((host[:-1] == 0).any()):
        raise ValueError(f"{name} may contain 0 only as its last entry")
    return grid


def check_positive_int(value: object, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value
