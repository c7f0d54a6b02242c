"""Exact output law of a sampler on a Gaussian target, and the Gaussian KL divergence.

For a target N(mu, Sigma) the denoiser D(x, sigma) = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu) is affine
in x, so a sampler built from D, linear combinations and its noise is an affine map
x_out = b + A x_T + sum_j C_j z_j of its start x_T and its standard normal draws z_j. With
x_T ~ N(m_T, S_T) the output is exactly N(b + A m_T, A S_T A^T + sum_j C_j C_j^T): no Monte Carlo
noise, so convergence orders show down to float64 rounding.

The map is read off by impulses: a dry run counts the sampler's noise_sampler calls; one batched run
then has a row for b (x_T = 0, no noise), one per column of A (x_T = e_i) and one per noise direction
(the noise_sampler returns e_i in that row on that call, zeros elsewhere). One extra row with a
random start and random noise checks that the sampler really is affine in both.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

SamplerFn = Callable[..., torch.Tensor]


def _as_float64(value: object, name: str) -> torch.Tensor:
    try:
        return torch.as_tensor(value, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be array-like of numbers, got {type(value).__name__}") from exc


def _check_gaussian(mean: object, cov: object, names: tuple[str, str]) -> tuple[torch.Tensor, torch.Tensor]:
    m, S = _as_float64(mean, names[0]), _as_float64(cov, names[1])
    if m.ndim != 1:
        raise ValueError(f"{names[0]} must be a vector [d], got shape {tuple(m.shape)}")
    d = m.shape[0]
    if S.shape != (d, d):
        raise ValueError(f"{names[1]} must be [d, d] = [{d}, {d}] to match {names[0]}, got shape {tuple(S.shape)}")
    if not torch.allclose(S, S.T, rtol=1e-12, atol=1e-300):
        raise ValueError(f"{names[1]} must be symmetric")
    return m, S


def gaussian_denoiser(mean: object, cov: object) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """D(x, sigma) = mu + Sigma (Sigma + sigma^2 I)^-1 (x - mu) for x `[B, d]` and sigma a float or `[B]`, in float64."""
    mu, Sigma = _check_gaussian(mean, cov, ("mean", "cov"))
    lam, Q = torch.linalg.eigh(Sigma)
    if bool((lam <= 0).any()):
        raise ValueError(f"cov must be positive definite, got smallest eigenvalue {float(lam.min()):g}")

    def denoiser(x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        s2 = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1, 1) ** 2
        q, m = Q.to(x.device), mu.to(x.device)
        coords = (x.to(torch.float64) - m) @ q
        return (m + (coords * lam.to(x.device) / (lam.to(x.device) + s2)) @ q.T).to(x.dtype)

    return denoiser


class _ImpulseNoise:
    """noise_sampler returning, on call number `c`, e_i in row `first + c d + i` and zeros elsewhere;
    the check row (the last one) gets the fixed random normals `check_noise[c]`."""

    def __init__(self, rows: int, d: int, first: int, check_noise: torch.Tensor | None):
        self.rows, self.d, self.first, self.check_noise = rows, d, first, check_noise
        self.calls = 0

    def __call__(self, sigma, sigma_next) -> torch.Tensor:
        z = torch.zeros(self.rows, self.d, dtype=torch.float64)
        start = self.first + self.calls * self.d
        if start + self.d <= self.rows - (self.check_noise is not None):
            z[start:start + self.d] = torch.eye(self.d, dtype=torch.float64)
        if self.check_noise is not None:
            z[-1] = self.check_noise[self.calls]
        self.calls += 1
        return z


def exact_output_law(
    sampler_fn: SamplerFn,
    target_mean: object,
    target_cov: object,
    sigmas: torch.Tensor | Sequence[float],
    *,
    start_mean: object | None = None,
    start_cov: object | None = None,
    check_tol: float = 1e-8,
    **sampler_kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact (mean, cov) of `sampler_fn(model, x, sigmas, noise_sampler=..., **sampler_kwargs)` on the target N(mean, cov).

    `sampler_fn` has k-diffusion's signature and must draw all its noise through `noise_sampler`,
    each standard normal exactly once. The start x_T is N(start_mean, start_cov), by default
    N(0, sigmas[0]^2 I) (k-diffusion's `randn * sigmas[0]`). Raises if the sampler is not affine in
    (x_T, noise) to relative accuracy `check_tol`.
    """
    mu, Sigma = _check_gaussian(target_mean, target_cov, ("target_mean", "target_cov"))
    d = mu.shape[0]
    grid = _as_float64(sigmas, "sigmas")
    if grid.ndim != 1 or grid.numel() < 2:
        raise ValueError(f"sigmas must be a 1-D grid of at least two entries, got shape {tuple(grid.shape)}")
    m_T, S_T = _check_gaussian(
        torch.zeros(d) if start_mean is None else start_mean,
        float(grid[0]) ** 2 * torch.eye(d) if start_cov is None else start_cov,
        ("start_mean", "start_cov"),
    )
    if m_T.shape[0] != d:
        raise ValueError(f"start_mean must have the target's dimension {d}, got {m_T.shape[0]}")
    model = gaussian_denoiser(mu, Sigma)

    counter = _ImpulseNoise(1, d, 1, None)
    sampler_fn(model, torch.zeros(1, d, dtype=torch.float64), grid, noise_sampler=counter, **sampler_kwargs)
    calls = counter.calls

    gen = torch.Generator().manual_seed(0)
    check_x = torch.randn(d, generator=gen, dtype=torch.float64) * float(grid[0])
    check_noise = torch.randn(calls, d, generator=gen, dtype=torch.float64)
    rows = 1 + d + calls * d + 1
    x = torch.zeros(rows, d, dtype=torch.float64)
    x[1:1 + d] = torch.eye(d, dtype=torch.float64)
    x[-1] = check_x
    impulses = _ImpulseNoise(rows, d, 1 + d, check_noise)
    out = sampler_fn(model, x, grid, noise_sampler=impulses, **sampler_kwargs).to(torch.float64)
    if impulses.calls != calls:
        raise ValueError(f"sampler_fn made {impulses.calls} noise_sampler calls on the impulse run but {calls} on the dry run")

    b = out[0]
    A = (out[1:1 + d] - b).T
    C = out[1 + d:1 + d + calls * d] - b
    predicted = b + A @ check_x + check_noise.reshape(-1) @ C
    scale = float(out.abs().max()) + float(check_x.abs().max()) + 1.0
    if not bool(torch.isfinite(out).all()) or float((predicted - out[-1]).abs().max()) > check_tol * scale * (1 + calls * d):
        raise ValueError("sampler_fn is not affine in (x_T, noise) on this target: the check row misses its prediction")
    return b + A @ m_T, A @ S_T @ A.T + C.T @ C


def gaussian_kl(m0: object, S0: object, m1: object, S1: object) -> float:
    """KL(N(m0, S0) || N(m1, S1)) = (sum_i (e_i - 1 - log e_i) + (m1-m0)^T S1^-1 (m1-m0)) / 2,

    e_i the eigenvalues of S1^-1 S0 (computed as L1^-1 S0 L1^-T, S1 = L1 L1^T); written with
    t - log1p(t), t = e - 1, so that tiny divergences keep their relative accuracy.
    """
    m0, S0 = _check_gaussian(m0, S0, ("m0", "S0"))
    m1, S1 = _check_gaussian(m1, S1, ("m1", "S1"))
    if m0.shape != m1.shape:
        raise ValueError(f"m0 and m1 must have the same dimension, got {m0.shape[0]} and {m1.shape[0]}")
    L1, info = torch.linalg.cholesky_ex(S1)
    if int(info) != 0:
        raise ValueError("S1 must be positive definite")
    M = torch.linalg.solve_triangular(L1, S0, upper=False)
    M = torch.linalg.solve_triangular(L1, M.T, upper=False)
    e = torch.linalg.eigvalsh(0.5 * (M + M.T))
    if bool((e <= 0).any()):
        raise ValueError(f"S0 must be positive definite, got an eigenvalue {float(e.min()):g} relative to S1")
    t = e - 1.0
    u = torch.linalg.solve_triangular(L1, (m1 - m0).unsqueeze(1), upper=False)
    return 0.5 * (float((t - torch.log1p(t)).sum()) + float((u * u).sum()))
