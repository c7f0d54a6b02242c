"""The network's output and vector-Jacobian products at one point of the probability-flow ODE.

`vjp` returns D(x, sigma) and u_p = v_p^T (dD/dx) for a stack of probes v_p, from one forward and
one backward pass of the network on the P copies of the batch side by side (a batch of P B).
`exact_divergence` returns D and div_x D = trace(dD/dx) exactly, from the d vector-Jacobian products
with the basis vectors e_1 .. e_d (a batch of d B: meant for small d).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from fastdiff.dtypes import working_dtype

Denoiser = Callable[..., torch.Tensor]


def vjp(denoiser: Denoiser, x: torch.Tensor, sigma: float, v: torch.Tensor, model_dtype: torch.dtype):
    """(D(x, sigma) [B, ...], u [P, B, ...]) in x's dtype, u[p] = v[p]^T (dD/dx) per sample, for probes v [P, *x.shape];
    the network sees x in `model_dtype` and sigma as a [P B] tensor."""
    n, batch = v.shape[0], x.shape[0]
    with torch.enable_grad():
        xs = x.detach().to(model_dtype).unsqueeze(0).expand(n, *x.shape).reshape(n * batch, *x.shape[1:])
        xs.requires_grad_(True)
        out = denoiser(xs, torch.full((n * batch,), sigma, dtype=working_dtype(x.dtype), device=x.device))
        if not isinstance(out, torch.Tensor) or out.shape != xs.shape:
            got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ValueError(f"denoiser must return a tensor shaped like its input {tuple(xs.shape)}, got {got}")
        if not out.requires_grad:
            raise ValueError("denoiser output does not depend differentiably on x: its divergence needs autograd through it")
        (u,) = torch.autograd.grad(out, xs, grad_outputs=v.reshape(xs.shape).to(out.dtype))
    return out.detach()[:batch].to(x.dtype), u.reshape(v.shape).to(x.dtype)


def exact_divergence(denoiser: Denoiser, x: torch.Tensor, sigma: float, model_dtype: torch.dtype):
    """(D(x, sigma), div_x D [B] float64) with the divergence summed from the d basis-vector products."""
    batch, d = x.shape[0], x[0].numel()
    basis = torch.eye(d, dtype=x.dtype, device=x.device)[:, None, :].expand(d, batch, d).reshape(d, *x.shape)
    denoised, u = vjp(denoiser, x, sigma, basis, model_dtype)
    diagonal = u.reshape(d, batch, d).diagonal(dim1=0, dim2=2)  # [B, d]: entry i of u_i
    return denoised, diagonal.to(torch.float64).sum(-1)
