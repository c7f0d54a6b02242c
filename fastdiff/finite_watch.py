"""Detecting a model that returns NaN or Inf partway through a run, without a per-step host sync.

Every network output adds one device-side flag `isfinite(out).all()` to a list; the run reads the
stacked flags once, at its end, and raises `NonFiniteError` naming the first evaluation whose output
was not finite (its step and sigma). Under torch.compile or CUDA graph capture the flags cannot be read
(`values_checkable`), so no check happens there.
"""

from __future__ import annotations

import torch

from fastdiff.validation import values_checkable


class NonFiniteError(FloatingPointError):
    """A model returned NaN or Inf during sampling; the message names the first step and sigma where it did."""


class FiniteWatch:
    """Per-evaluation finiteness flags kept on the device, read once by `check`.

    `what` names the model in the message ("denoiser", "model 2", ...); `opt_out` names the argument
    that turns the check off, so the message can say how to get the raw tensor.
    """

    def __init__(self, opt_out: str = "check_finite=False"):
        self.opt_out = opt_out
        self.flags: list[torch.Tensor] = []
        self.where: list[tuple[str, int, object]] = []

    def record(self, out: torch.Tensor, step: int, sigma: float, what: str = "denoiser") -> None:
        """Note whether `out`, the model's output at step `step` and noise level `sigma`, is finite (no sync)."""
        self.flags.append(torch.isfinite(out).all())
        self.where.append((what, step, sigma))  # a host float, read only in the message

    def check(self) -> None:
        """Raise NonFiniteError if any recorded output was not finite (one host read of all flags)."""
        if not self.flags or not values_checkable(self.flags[0]):
            return
        finite = torch.stack(self.flags).cpu().tolist()
        if all(finite):
            return
        first = finite.index(False)
        what, step, sigma = self.where[first]
        raise NonFiniteError(
            f"the {what} returned NaN or Inf at step {step} (sigma={float(sigma):g}, evaluation {first + 1} of "
            f"{len(finite)}); every later step is invalid. Pass {self.opt_out} to get the raw tensor anyway"
        )
