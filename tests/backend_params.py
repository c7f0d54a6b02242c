"""pytest parameters (backend, device) for every implementation on every device it runs on;
the ones unavailable here are skipped with the reason."""

import pytest
import torch

import fastdiff


def backend_params() -> list:
    status = fastdiff.backends()
    cuda = torch.cuda.is_available()
    params = []
    for backend, device in (("reference", "cpu"), ("reference", "cuda"), ("cpu", "cpu"), ("cuda", "cuda")):
        if device == "cuda" and not cuda:
            reason = "no CUDA device visible"
        elif not status[backend].available:
            reason = status[backend].reason
        else:
            reason = None
        marks = [pytest.mark.skip(reason=f"{backend} on {device}: {reason}")] if reason else []
        params.append(pytest.param(backend, device, id=f"{backend}-{device}", marks=marks))
    return params
