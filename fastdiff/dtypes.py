"""The working-dtype rule, written once: arithmetic on samples is float64 for float64 inputs, float32 otherwise
(float16 and bfloat16 states, model inputs and sigmas are carried in float32)."""

from __future__ import annotations

import torch


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64, float32 for every other dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32
