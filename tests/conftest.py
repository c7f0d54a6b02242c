"""Test-suite settings: one intra-op thread. The suite is dominated by tiny tensors, where
thread-pool hand-offs cost far more than the work on a small, shared machine."""

import torch

torch.set_num_threads(1)
