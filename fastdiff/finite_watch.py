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
    """Per-evaluation finiteness flags of the model's input and output, kept on the device, read once by `check`.

    `opt_out` names the argument that turns the check off, so the message can say how to get the raw tensor.
    A non-finite input means the solver's state overflowed before the model ran (an option or grid out of scale);
    a non-finite output from a finite input is the model's own.
    """

    def __init__(self, opt_out: str = "check_finite=False"):
        self.opt_out = opt_out
        self.flags: list[torch.Tensor] = []
        self.where: list[tuple[str, int, object]] = []

    def record(self, model_input: torch.Tensor, out: torch.Tensor, step: int, sigma: object, what: str = "denoiser") -> None:
        """Note whether the model `what` saw and returned finite values at step `step`, noise level `sigma` (no sync)."""
        self.flags.append(torch.stack([torch.isfinite(model_input).all(), torch.isfinite(out).all()]))
        self.where.append((what, step, sigma))  # sigma: a host float, read only in the message

    def check(self) -> None:
        """Raise NonFiniteError at the first evaluation with a non-finite input or output (one host read of all flags)."""
        if not self.flags or not values_checkable(self.flags[0]):
            return
        finite = torch.stack(self.flags).cpu().tolist()
        bad = [j for j, (input_ok, output_ok) in enumerate(finite) if not (input_ok and output_ok)]
        if not bad:
            return
        first = bad[0]
        what, step, sigma = self.where[first]
        at = f"at step {step} (sigma={float(sigma):g}, evaluation {first + 1} of {len(finite)})"
        if finite[first][0]:
            cause = f"the {what} returned NaN or Inf {at}"
        else:
            cause = f"the sampler's state was NaN or Inf when the {what} was called {at}: an option or the grid is out of scale"
        raise NonFiniteError(f"{cause}; every later step is invalid. Pass {self.opt_out} to get the raw tensor anyway")
