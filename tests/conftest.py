"""Test-suite settings.

- One intra-op thread: the suite is dominated by tiny tensors, where thread-pool hand-offs cost
  far more than the work on a small, shared machine.
- Without a GPU, the Triton kernels run in Triton's interpreter on CPU tensors (TRITON_INTERPRET=1,
  read when the kernels are defined), so the same backend tests exercise them on every machine.
"""

import os

import torch

torch.set_num_threads(1)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
