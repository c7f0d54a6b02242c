"""Which implementations of the fused primitives are usable here, and picking one.

Backends: "reference" (pure PyTorch, any device, float64 capable), "cpu" (compiled C++
extension), "cuda" (compiled extension built with CUDA), "triton" (Triton kernels on a GPU, or
on CPU tensors under Triton's interpreter, TRITON_INTERPRET=1, which is slow and meant for tests).
`"auto"` picks the fastest available one for a tensor's device; an explicitly requested
backend that is unavailable raises and says what is missing, never falls back silently.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass

import torch

from fastdiff._extension import load_error

BACKENDS = ("reference", "cpu", "cuda", "triton")


@dataclass(frozen=True)
class BackendStatus:
    available: bool
    reason: str


def _has_cuda_kernels() -> bool:
    return load_error() is None and torch._C._dispatch_has_kernel_for_dispatch_key(
        "fastdiff::philox_normal", "CUDA"
    )


def _status(name: str) -> BackendStatus:
    if name == "reference":
        return BackendStatus(True, "pure PyTorch, always available")
    if name == "cpu":
        err = load_error()
        return BackendStatus(err is None, err or "compiled C++ extension loaded")
    if name == "cuda":
        if load_error() is not None:
            return BackendStatus(False, load_error())
        if not _has_cuda_kernels():
            return BackendStatus(False, "extension was built without CUDA (needs a CUDA torch and CUDA_HOME, or FORCE_CUDA=1)")
        if not torch.cuda.is_available():
            return BackendStatus(False, "extension has CUDA kernels but no CUDA device is visible")
        return BackendStatus(True, "compiled CUDA kernels loaded")
    if name == "triton":
        if importlib.util.find_spec("triton") is None:
            return BackendStatus(False, "triton is not installed (pip install fastdiff[triton])")
        if triton_interpreted():
            return BackendStatus(True, "triton kernels in the interpreter (TRITON_INTERPRET=1), on CPU tensors")
        if not torch.cuda.is_available():
            return BackendStatus(False, "triton is installed but no GPU is visible (TRITON_INTERPRET=1 runs it on CPU tensors)")
        return BackendStatus(True, "triton kernels available")
    raise ValueError(f"backend must be one of {BACKENDS} or 'auto', got {name!r}")


def triton_interpreted() -> bool:
    """Whether Triton kernels run in its interpreter on CPU tensors (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def backends() -> dict[str, BackendStatus]:
    """Report every backend as {name: BackendStatus(available, reason)}."""
    return {name: _status(name) for name in BACKENDS}


def resolve_backend(backend: str, device: torch.device, supported: tuple[str, ...] = BACKENDS) -> str:
    """Return the concrete backend to run on `device`.

    `supported` lists the backends the calling primitive implements. "auto" takes the first
    usable one in order cuda > triton > cpu > reference for the device; an explicit name must
    be usable and must suit the device, or this raises. Under torch.compile the answer is taken
    once at trace time (a constant of the graph), so loading the extension never breaks the graph.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    if backend == "auto":
        order = ("cuda", "triton", "reference") if device.type == "cuda" else ("cpu", "reference")
        for name in order:
            if name in supported and _status(name).available:
                return name
        return "reference"
    status = _status(backend)
    if backend not in supported:
        raise ValueError(f"backend={backend!r} is not implemented for this operation; it supports {supported}")
    if not status.available:
        raise RuntimeError(f"backend={backend!r} is unavailable: {status.reason}")
    if backend == "cpu" and device.type != "cpu":
        raise ValueError(f"backend='cpu' needs CPU tensors, got tensors on {device}")
    if backend == "triton" and triton_interpreted():
        if device.type != "cpu":
            raise ValueError(f"backend='triton' under TRITON_INTERPRET=1 needs CPU tensors, got tensors on {device}")
    elif backend in ("cuda", "triton") and device.type != "cuda":
        raise ValueError(f"backend={backend!r} needs CUDA tensors, got tensors on {device}")
    return backend


# What `torch.compiler.assume_constant_result` does, without importing torch._dynamo (about 2 s) with fastdiff:
# under torch.compile the backend is resolved once at trace time, a constant of the graph (tests/test_compile.py).
resolve_backend._dynamo_marked_constant = True
