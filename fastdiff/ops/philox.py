"""Counter-based standard normals (`fastdiff.reference.philox` defines the function), by backend."""

from __future__ import annotations

import torch

from fastdiff.backends import resolve_backend
from fastdiff.reference import philox as reference

SUPPORTED_BACKENDS = ("reference",)


def philox_normal(
    keys: torch.Tensor,
    numel: int,
    step: int,
    stage: int,
    stream: int,
    dtype: torch.dtype = torch.float32,
    backend: str = "auto",
) -> torch.Tensor:
    """Standard normals `[B, numel]`: element e of sample b is a fixed function of
    (keys[b], e, step, stage, stream)."""
    if keys.dtype != torch.int64 or keys.ndim != 1:
        raise TypeError(f"keys must be a 1-D int64 tensor of per-sample seeds, got dtype {keys.dtype}, shape {tuple(keys.shape)}")
    resolve_backend(backend, keys.device, SUPPORTED_BACKENDS)
    return reference.philox_normal(keys, numel, step, stage, stream, dtype)
