"""pytest parameters (backend, device) for every implementation on every device it runs on;
the ones unavailable here are skipped with the reason. Triton runs on CUDA tensors, or on CPU
tensors under its interpreter (tests/conftest.py turns it on when there is no GPU)."""

import pytest
import torch

import fastdiff
from fastdiff.backends import triton_interpreted


def backend_device_pairs() -> list[tuple[str, str]]:
    triton_device = "cpu" if triton_interpreted() else "cuda"
    return [("reference", "cpu"), ("reference", "cuda"), ("cpu", "cpu"), ("cuda", "cuda"), ("triton", triton_device)]


def backend_params(include_reference: bool = True) -> list:
    status = fastdiff.backends()
    cuda = torch.cuda.is_available()
    params = []
    for backend, device in backend_device_pairs():
        if backend == "reference" and not include_reference:
            continue
        if device == "cuda" and not cuda:
            reason = "no CUDA device visible"
        elif not status[backend].available:
            reason = status[backend].reason
        else:
            reason = None
        marks = [pytest.mark.skip(reason=f"{backend} on {device}: {reason}")] if reason else []
        params.append(pytest.param(backend, device, id=f"{backend}-{device}", marks=marks))
    return params
