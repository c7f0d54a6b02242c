"""The step rules of a superposition (`fastdiff.compose.config.SuperpositionConfig`), walked by `fastdiff.stepping`.

Each step requests one evaluation, D(x, sigma) at the step's own point, and is answered with the list of the M
models' outputs [D_1, ..., D_M] (what calling the superposition returns). The rules keep the log-density estimates
`ell` [B, M] on the instance and take every step themselves, the last one to sigma' = 0 included
(`denoises_at_zero = False`): their log q_i updates belong to every step.

- `SuperposedEulerMaruyama`: Delta = sigma^2 - sigma'^2, x' = x + Delta sum_i kappa_i s_i + sqrt(Delta) z and
  ell_i' = ell_i + <x' - x, s_i> - (Delta/2) ||s_i||^2, all in one fused `fastdiff.ops.ito_step.ito_step`.
- `SuperposedFlowEuler`: h = (sigma - sigma') sigma, x' = x + h u with u = sum_i kappa_i s_i, and
  ell_i' = ell_i - h (div s_i + ||s_i||^2) + h <s_i, u>; div s_i by Hutchinson's estimator, the mean of
  <v, J_i^T v> over the step's probes v (stages 0..n_probes-1 of the probe stream), one vector-Jacobian product
  per model and probe. It requests D at a leaf copy of x that requires grad, so the answer carries the graph.
"""

from __future__ import annotations

from collections.abc import Generator

import torch

from fastdiff.compose.config import SuperpositionConfig
from fastdiff.noise import STREAM_PROBE, STREAM_SOLVER
from fastdiff.ops.ito_step import ito_step, or_weights, regularization, solve_bordered
from fastdiff.solvers.base import Evaluation, Solver, StepContext, StepOutput


class SuperposedEulerMaruyama(Solver):
    """Euler-Maruyama steps of the superposed reverse SDE with the Itô estimates of every log q_i (module docstring)."""

    name = "superposed_euler_maruyama"
    order = 1
    evaluations_per_step = 1
    stochastic = True
    denoises_at_zero = False
    noise_stream = STREAM_SOLVER

    def __init__(self, config: SuperpositionConfig, ell: torch.Tensor):
        self.config = config
        self.ell = ell

    def step(self, ctx: StepContext, i: int, x: torch.Tensor) -> Generator:
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        denoised = yield Evaluation(x, sigma)
        c = self.config
        x_next, self.ell, _ = ito_step(
            x, denoised, sigma, sigma_next, self.ell, ctx.draw(i, 0, sigma, sigma_next), c.mode, c.temperature,
            c.log_weights, c.bias, c.rcond, backend=ctx.backend,
        )
        yield StepOutput(x_next, denoised, x, sigma)


class SuperposedFlowEuler(Solver):
    """Euler steps of the superposed probability-flow ODE with Hutchinson log q_i updates (module docstring)."""

    name = "superposed_flow_euler"
    order = 1
    evaluations_per_step = 1
    stochastic = True  # the Hutchinson probes
    denoises_at_zero = False
    noise_stream = STREAM_PROBE

    def __init__(self, config: SuperpositionConfig, ell: torch.Tensor, n_probes: int):
        self.config = config
        self.ell = ell
        self.n_probes = n_probes

    def step(self, ctx: StepContext, i: int, x: torch.Tensor) -> Generator:
        sigma, sigma_next = ctx.sigmas[i], ctx.sigmas[i + 1]
        probes = [ctx.noise.draw(x, i, k) for k in range(self.n_probes)]
        leaf = x.detach().requires_grad_(True)
        denoised = yield Evaluation(leaf, sigma)
        batch = x.shape[0]
        scores, divergences = [], []
        with torch.enable_grad():
            for d in denoised:
                s = (d - leaf) / sigma**2
                div = torch.zeros(batch, dtype=x.dtype, device=x.device)
                for k, v in enumerate(probes):
                    (vjp,) = torch.autograd.grad(s, leaf, v, retain_graph=k + 1 < self.n_probes)
                    div = div + (vjp * v).reshape(batch, -1).sum(1)
                scores.append(s.detach().reshape(batch, -1))
                divergences.append(div / self.n_probes)
        s = torch.stack(scores, dim=1)  # [B, M, N]
        gram = s @ s.mT
        h = (sigma - sigma_next) * sigma  # -dsigma * sigma > 0
        own = h * (torch.stack(divergences, dim=1) + torch.diagonal(gram, dim1=-2, dim2=-1))
        kappa = self._weights(gram, h, own)
        pull = (gram @ kappa[:, :, None]).squeeze(-1)  # <s_i, u>
        x_next = x + h * (kappa[:, :, None] * s).sum(1).view(x.shape)
        self.ell = self.ell - own + h * pull
        yield StepOutput(x_next, [d.detach() for d in denoised], x, sigma)

    def _weights(self, gram: torch.Tensor, h: float, own: torch.Tensor) -> torch.Tensor:
        """kappa [B, M]: OR's softmax of the running estimates, or AND's weights keeping every ell_i' - bias_i equal:
        ell_i + h (G kappa)_i - own_i - bias_i equal for every i with sum kappa = 1 (regularized as the SDE step)."""
        c, ell = self.config, self.ell
        if c.mode == "or":
            return or_weights(ell, c.temperature, torch.tensor(c.log_weights, dtype=ell.dtype, device=ell.device))
        bias = torch.tensor(c.bias, dtype=ell.dtype, device=ell.device)
        eps = regularization(gram, h, c.rcond)
        matrix = h * gram + eps[:, None, None] * torch.eye(len(c), dtype=ell.dtype, device=ell.device)
        return solve_bordered(matrix, bias - ell + own)
