"""Limits on the denoised prediction x0 = D(x, sigma), as diffusers' schedulers apply them (config keys `thresholding`,
`dynamic_thresholding_ratio`, `sample_max_value`, `clip_sample`, `clip_sample_range`).

x0 is the same point in a pipeline's VP coordinates and in fastdiff's VE ones, so the limit is applied to the estimate
D that the solver receives, once per network evaluation, by every fastdiff scheduler:
- dynamic thresholding (Saharia et al. 2022, arXiv 2205.11487): per sample, s = clamp(q, 1, sample_max_value) with q
  the `dynamic_thresholding_ratio` quantile of |x0| over all its elements, then x0 <- clamp(x0, -s, s) / s;
- clipping: x0 <- clamp(x0, -clip_sample_range, clip_sample_range).
Thresholding wins when both are set, as in DDPMScheduler and DDIMScheduler. Neither reads a value on the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fastdiff.validation import check_flag, check_number


@dataclass(frozen=True)
class X0Limit:
    """The limit of one scheduler config; `apply(x0)` returns the limited x0 (x0 itself when no limit is set)."""

    thresholding: bool = False
    dynamic_thresholding_ratio: float = 0.995
    sample_max_value: float = 1.0
    clip_sample: bool = False
    clip_sample_range: float = 1.0

    def __post_init__(self):
        check_flag(self.thresholding, "thresholding")
        check_flag(self.clip_sample, "clip_sample")
        ratio = self.dynamic_thresholding_ratio
        if not 0.0 <= check_number(ratio, "dynamic_thresholding_ratio", low=-math.inf) <= 1.0:
            raise ValueError(f"dynamic_thresholding_ratio must be a number in [0, 1], got {ratio!r}")
        for name in ("sample_max_value", "clip_sample_range"):
            if not check_number(getattr(self, name), name) > 0:
                raise ValueError(f"{name} must be a positive number, got {getattr(self, name)!r}")

    @property
    def active(self) -> bool:
        return self.thresholding or self.clip_sample

    def apply(self, x0: torch.Tensor) -> torch.Tensor:
        if self.thresholding:
            return dynamic_threshold(x0, self.dynamic_thresholding_ratio, self.sample_max_value)
        if self.clip_sample:
            return x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        return x0


def dynamic_threshold(x0: torch.Tensor, ratio: float, max_value: float) -> torch.Tensor:
    """Per sample (dim 0): s = min(max(quantile(|x0|, ratio), 1), max_value); clamp(x0, -s, s) / s. The quantile is
    taken in float32 at least (torch.quantile needs it), the result has x0's dtype."""
    work = x0 if x0.dtype in (torch.float32, torch.float64) else x0.float()
    flat = work.reshape(work.shape[0], -1)
    s = torch.quantile(flat.abs(), ratio, dim=1).clamp(min=1.0).clamp(max=max_value).unsqueeze(1)
    return (torch.maximum(torch.minimum(flat, s), -s) / s).reshape(x0.shape).to(x0.dtype)
