"""Which fused backends a benchmark times on a device, and why one is skipped (shared by the bench suites)."""

from __future__ import annotations

import torch

import fastdiff
from fastdiff.backends import triton_interpreted


def fused_backends(device: str) -> list[tuple[str, str | None]]:
    """(backend, reason to skip or None) for the fused backends of `device`."""
    status = fastdiff.backends()
    if device == "cpu":
        return [("cpu", None if status["cpu"].available else status["cpu"].reason)]
    out = []
    for name in ("cuda", "triton"):
        if not torch.cuda.is_available():
            reason = "no CUDA device visible"
        elif name == "triton" and triton_interpreted():
            reason = "TRITON_INTERPRET=1: the interpreter is for tests, never benchmarked"
        else:
            reason = None if status[name].available else status[name].reason
        out.append((name, reason))
    return out
