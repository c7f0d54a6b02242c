"""The Itô density estimator (SuperDiff, Skreta et al. 2024, arXiv 2412.17762; docs/ALGORITHMS.md section 6).

Along a reverse-SDE trajectory whose noise has exactly the forward process's scale (EDM form: a step
sigma -> sigma' adds sqrt(Delta) z, Delta = sigma^2 - sigma'^2), the log-density of any model i changes by

    log q_i(x', sigma') - log q_i(x, sigma) ~ <x' - x, s_i(x, sigma)> - (Delta / 2) ||s_i(x, sigma)||^2,

with no divergence term: Itô's formula for log q_i along dx = u dtau + dW (tau = -sigma^2) has the Laplacian of
the heat equation cancel the one from the quadratic variation, for any drift u. That cancellation needs the
noise variance to be exactly Delta per step, so samplers with churn, eta != 1 or s_noise != 1 break it
(`check_forward_noise`). The estimate is a left-point Itô sum: its error vanishes as the grid is refined
(tests/test_compose.py measures it against exact mixture densities).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastdiff.validation import check_positive_int

# k-diffusion / fastdiff sampler options and the value each must have for the noise to be the forward process's.
_FORWARD_NOISE = {"s_noise": 1.0, "eta": 1.0, "s_churn": 0.0}
_WHAT_IT_DOES = {
    "s_noise": "scales the injected noise",
    "eta": "changes the ancestral noise scale",
    "s_churn": "adds noise on top of the step (EDM churn)",
}
# Samplers whose step noise is exactly sqrt(sigma^2 - sigma'^2) z.
FORWARD_NOISE_SOLVERS = ("euler_maruyama",)


def check_forward_noise(solver: str = "euler_maruyama", **options: float) -> None:
    """Raise unless `solver` with `options` injects exactly the forward process's noise, sqrt(Delta) z per step.

    Only Euler-Maruyama does (`FORWARD_NOISE_SOLVERS`); `s_noise` and `eta` must be 1 and `s_churn` 0, and
    options outside these (s_tmin, s_tmax only matter with churn) are accepted only when churn is off.
    """
    if solver not in FORWARD_NOISE_SOLVERS:
        raise ValueError(
            f"solver={solver!r}: the Itô density estimate needs a sampler whose step noise is exactly "
            f"sqrt(sigma^2 - sigma_next^2) z; use one of {FORWARD_NOISE_SOLVERS}"
        )
    for name, value in options.items():
        if name in ("s_tmin", "s_tmax"):
            continue
        if name not in _FORWARD_NOISE:
            raise TypeError(f"unknown sampler option {name!r}; the Itô density estimate accepts {sorted(_FORWARD_NOISE)}")
        if isinstance(value, bool) or float(value) != _FORWARD_NOISE[name]:
            raise ValueError(
                f"{name}={value!r} {_WHAT_IT_DOES[name]}, so the noise no longer has the forward process's scale and the "
                f"Itô density estimate is wrong; it needs {name}={_FORWARD_NOISE[name]:g}"
            )


class ItoDensity:
    """Running Itô estimates of log q_i along a trajectory, for M models at once. `log_q` is [B, M].

    Call `update` once per step with the state before and after the step and the models' scores (or denoised
    outputs) at the state before the step. `log_q` starts at `start` (default 0, so it holds
    log q_i(x_now, sigma_now) - log q_i(x_start, sigma_start)); it is kept in float64 when the samples are
    float64, else float32, whatever the dtype of the samples and scores.

        density = ItoDensity(batch=x.shape[0], n_models=2)
        for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):   # with an Euler-Maruyama step, s_noise = 1
            d = [model(x, sigma) for model in models]
            x_next = ...                                        # any drift, noise exactly sqrt(Delta) z
            density.update(x, x_next, sigma, sigma_next, denoised=d)
            x = x_next
    """

    def __init__(self, batch: int, n_models: int = 1, *, dtype: torch.dtype = torch.float32,
                 device: torch.device | str = "cpu", start: torch.Tensor | None = None):
        if dtype not in (torch.float32, torch.float64):
            raise TypeError(f"dtype must be float32 or float64 (the accumulation dtype), got {dtype}")
        check_positive_int(batch, "batch")
        check_positive_int(n_models, "n_models")
        self.log_q = torch.zeros(batch, n_models, dtype=dtype, device=device)
        if start is not None:
            if not isinstance(start, torch.Tensor) or start.shape != self.log_q.shape:
                got = tuple(start.shape) if isinstance(start, torch.Tensor) else type(start).__name__
                raise ValueError(f"start must be a [batch, n_models] = {tuple(self.log_q.shape)} tensor, got {got}")
            self.log_q += start.to(self.log_q)

    def update(
        self,
        x: torch.Tensor,
        x_next: torch.Tensor,
        sigma: float,
        sigma_next: float,
        *,
        scores: Sequence[torch.Tensor] | None = None,
        denoised: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Add <x' - x, s_i> - (Delta/2) ||s_i||^2 for each model (s_i = (D_i - x)/sigma^2 from `denoised`); returns log_q."""
        if (scores is None) == (denoised is None):
            raise ValueError("give exactly one of scores (s_i(x, sigma)) or denoised (D_i(x, sigma))")
        sigma, sigma_next = float(sigma), float(sigma_next)
        if not sigma > sigma_next >= 0.0:
            raise ValueError(f"needs sigma > sigma_next >= 0, got sigma={sigma}, sigma_next={sigma_next}")
        terms = list(scores if scores is not None else denoised)
        batch, m = self.log_q.shape
        kind = "scores" if scores is not None else "denoised"
        if len(terms) != m:
            raise ValueError(f"expected {m} {kind} tensors (n_models), got {len(terms)}")
        for name, t in [("x", x), ("x_next", x_next), *((f"{kind}[{i}]", t) for i, t in enumerate(terms))]:
            if not isinstance(t, torch.Tensor) or t.shape != x.shape or t.shape[0] != batch:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"{name} must have shape [{batch}, ...] like x {tuple(x.shape)}, got {got}")
        acc = self.log_q.dtype
        flat = x.reshape(batch, -1).to(acc)
        move = x_next.reshape(batch, -1).to(acc) - flat
        delta = (sigma - sigma_next) * (sigma + sigma_next)
        for i, t in enumerate(terms):
            s = t.reshape(batch, -1).to(acc)
            if denoised is not None:
                s = (s - flat) / sigma**2
            self.log_q[:, i] += (move * s).sum(1) - 0.5 * delta * (s * s).sum(1)
        return self.log_q
