"""Test-suite settings.

- One intra-op thread: the suite is dominated by tiny tensors, where thread-pool hand-offs cost
  far more than the work on a small, shared machine.
- Without a GPU, the Triton kernels run in Triton's interpreter on CPU tensors (TRITON_INTERPRET=1,
  read when the kernels are defined), so the same backend tests exercise them on every machine.
- `comfy`: the vendored ComfyUI for the tests that compare a solver with ComfyUI's own function.
"""

import os

import pytest
import torch

torch.set_num_threads(1)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture(scope="module")
def comfy():
    """The vendored ComfyUI's modules (tests/comfy_env.py), loaded once per module; test modules that need another
    stand-in define their own `comfy`."""
    import comfy_env

    return comfy_env.load()
