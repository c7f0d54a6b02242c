"""Scalar maths for step coefficients that are host floats (sampling) or 0-d tensors that require grad
(`fastdiff.ld3` differentiating a solve with respect to its grid). Floats go through `math`, so the sampling
path computes exactly what it always did; tensors go through `torch`, so gradients flow."""

from __future__ import annotations

import math

import torch

Scalar = float | torch.Tensor


def log(v: Scalar) -> Scalar:
    return torch.log(v) if isinstance(v, torch.Tensor) else math.log(v)


def expm1(v: Scalar) -> Scalar:
    return torch.expm1(v) if isinstance(v, torch.Tensor) else math.expm1(v)
