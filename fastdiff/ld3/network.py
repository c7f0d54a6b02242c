"""The network call inside the LD3 loop: D(x, sigma) with sigma a 0-d tensor that may require grad.

The loss depends on the grid through the solver's coefficients and through the sigma the network sees, so the
sigma input needs a gradient. `sigma_grad="autograd"` differentiates the denoiser; `"finite_difference"` is for
denoisers whose sigma path is not differentiable (`fastdiff.toy.GaussianMixture` detaches sigma): the value is
D(x, sigma) with autograd in x, and dD/dsigma comes from a central difference in float64 (2 extra evaluations).
`"auto"` probes the denoiser once and picks. `checkpoint=True` recomputes the network in the backward pass
(`torch.utils.checkpoint`) instead of storing its activations: for big models.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.utils.checkpoint import checkpoint as recompute

from fastdiff.dtypes import working_dtype

SIGMA_GRADS = ("auto", "autograd", "finite_difference")
RELATIVE_STEP = 1e-5  # central difference in float64: error ~ step^2 + eps / step


class NetworkCall:
    def __init__(
        self, denoiser: Callable, *, sigma_grad: str = "autograd", checkpoint: bool = False, extra_args: dict | None = None
    ):
        if sigma_grad not in SIGMA_GRADS[1:]:
            raise ValueError(f"sigma_grad must be one of {SIGMA_GRADS[1:]} here, got {sigma_grad!r}")
        self.denoiser, self.sigma_grad, self.checkpoint = denoiser, sigma_grad, checkpoint
        self.extra_args = extra_args or {}

    def _raw(self, x: torch.Tensor, sigma_batch: torch.Tensor) -> torch.Tensor:
        out = self.denoiser(x, sigma_batch, **self.extra_args)
        if not isinstance(out, torch.Tensor) or out.shape != x.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"denoiser must return a tensor shaped like x {tuple(x.shape)}, got {got}")
        return out.to(x.dtype)

    def _call(self, x: torch.Tensor, sigma_batch: torch.Tensor) -> torch.Tensor:
        if self.checkpoint and torch.is_grad_enabled():
            return recompute(self._raw, x, sigma_batch, use_reentrant=False)
        return self._raw(x, sigma_batch)

    def __call__(self, x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
        dtype = working_dtype(x.dtype)
        if not isinstance(sigma, torch.Tensor):
            return self._call(x, torch.full((x.shape[0],), sigma, dtype=dtype, device=x.device))
        sigma = sigma.to(device=x.device)
        if self.sigma_grad == "autograd" or not sigma.requires_grad:
            return self._call(x, sigma.to(dtype).expand(x.shape[0]))
        fixed = sigma.detach()
        out = self._call(x, fixed.to(dtype).expand(x.shape[0]))
        with torch.no_grad():
            h = RELATIVE_STEP * fixed
            up = self._raw(x.detach(), (fixed + h).to(dtype).expand(x.shape[0]))
            down = self._raw(x.detach(), (fixed - h).to(dtype).expand(x.shape[0]))
            slope = (up - down) / (2.0 * h)
        return out + (sigma - fixed).to(x.dtype) * slope


def sigma_is_differentiable(denoiser: Callable, x: torch.Tensor, sigma: float, extra_args: dict | None = None) -> bool:
    """Whether the denoiser's output carries a gradient to its sigma input (probed on `x`)."""
    dtype = working_dtype(x.dtype)
    s = torch.tensor(sigma, dtype=dtype, device=x.device, requires_grad=True)
    with torch.enable_grad():
        out = denoiser(x.detach(), s.expand(x.shape[0]), **(extra_args or {}))
        if not isinstance(out, torch.Tensor) or not out.requires_grad:
            return False
        (grad,) = torch.autograd.grad(out.sum(), s, allow_unused=True)
    return grad is not None
