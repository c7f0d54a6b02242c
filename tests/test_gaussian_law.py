"""`fastdiff.gaussian_law`: the exact output law of a sampler on a Gaussian target (impulse trick) and the Gaussian KL,
checked against a law computed by hand, against Monte Carlo, and against the closed forms."""

from __future__ import annotations

import math

import pytest
import torch

import fastdiff
from fastdiff import sampling
from fastdiff.gaussian_law import exact_output_law, gaussian_denoiser, gaussian_kl


def spd(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(d, d, generator=g, dtype=torch.float64)
    return a @ a.T / d + 0.3 * torch.eye(d, dtype=torch.float64)


def test_denoiser_is_the_posterior_mean():
    mu, cov = torch.tensor([0.5, -1.0], dtype=torch.float64), spd(2, 0)
    x = torch.tensor([[1.0, 2.0], [-0.3, 0.1]], dtype=torch.float64)
    sigma = torch.tensor([0.7, 2.0], dtype=torch.float64)
    out = gaussian_denoiser(mu, cov)(x, sigma)
    for b in range(2):
        expected = mu + cov @ torch.linalg.solve(cov + sigma[b] ** 2 * torch.eye(2, dtype=torch.float64), x[b] - mu)
        torch.testing.assert_close(out[b], expected, rtol=1e-13, atol=1e-13)


def test_one_euler_maruyama_step_by_hand():
    """EM from s0 to s1, then the denoising step at s1: x_out - mu = g1 ((rho + (1 - rho) g0) (x_T - mu) + sqrt(s0^2 - s1^2) z)
    with rho = (s1/s0)^2 and g = lam/(lam + s^2)."""
    mu, lam, s0, s1 = 0.7, 0.2, 3.0, 0.4
    m_T, v_T = -0.5, 2.5
    mean, cov = exact_output_law(sampling.sample_euler_maruyama, [mu], [[lam]], [s0, s1, 0.0],
                                 start_mean=[m_T], start_cov=[[v_T]])
    g0, g1, rho = lam / (lam + s0**2), lam / (lam + s1**2), (s1 / s0) ** 2
    gain = g1 * (rho + (1.0 - rho) * g0)
    assert float(mean[0]) == pytest.approx(mu + gain * (m_T - mu), rel=1e-14)
    assert float(cov[0, 0]) == pytest.approx(gain**2 * v_T + g1**2 * (s0**2 - s1**2), rel=1e-13)


def test_default_start_is_k_diffusion_randn_times_sigma_max():
    grid = [2.0, 0.5, 0.0]
    default = exact_output_law(sampling.sample_euler_maruyama, [1.0], [[0.3]], grid)
    explicit = exact_output_law(sampling.sample_euler_maruyama, [1.0], [[0.3]], grid, start_mean=[0.0], start_cov=[[4.0]])
    moved = exact_output_law(sampling.sample_euler_maruyama, [1.0], [[0.3]], grid, start_mean=[1.0], start_cov=[[4.0]])
    assert all(torch.equal(a, b) for a, b in zip(default, explicit, strict=True))
    assert not torch.equal(default[0], moved[0])


@pytest.mark.parametrize("solver", ["srk", "srk_dp", "euler_ancestral"])
def test_agrees_with_monte_carlo(solver):
    """Three steps on a 2-D target: the exact law against 200k counter-stream samples, every mean and covariance
    entry within 5 standard errors (a wrong law, e.g. noise counted twice, misses by hundreds of them)."""
    mu, cov = torch.tensor([1.0, -0.5], dtype=torch.float64), spd(2, 1)
    grid = fastdiff.get_sigmas("karras", 4, 0.05, 5.0)
    def sampler(model, x, sigmas, noise_sampler):
        return fastdiff.sample(model, x, sigmas, solver, noise_sampler=noise_sampler)

    mean, exact_cov = exact_output_law(sampler, mu, cov, grid)
    n = 200_000
    x = torch.randn(n, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * float(grid[0])
    out = fastdiff.sample(gaussian_denoiser(mu, cov), x, grid, solver, seed=11)
    mc_mean, mc_cov = out.mean(0), torch.cov(out.T)
    se_mean = torch.sqrt(torch.diagonal(exact_cov) / n)
    se_cov = torch.sqrt((torch.outer(torch.diagonal(exact_cov), torch.diagonal(exact_cov)) + exact_cov**2) / n)
    assert bool(((mc_mean - mean).abs() < 5 * se_mean).all()), (mc_mean, mean)
    assert bool(((mc_cov - exact_cov).abs() < 5 * se_cov).all()), (mc_cov, exact_cov)


def test_rejects_a_sampler_that_is_not_affine():
    def squaring(model, x, sigmas, noise_sampler=None):
        return model(x, sigmas[0] * x.new_ones(x.shape[0])) + 0.01 * noise_sampler(sigmas[0], sigmas[1]) ** 2

    with pytest.raises(ValueError, match="not affine"):
        exact_output_law(squaring, [0.0], [[1.0]], [1.0, 0.0])


def test_argument_errors_name_the_argument():
    with pytest.raises(ValueError, match="target_cov"):
        exact_output_law(sampling.sample_euler_maruyama, [0.0, 1.0], [[1.0]], [1.0, 0.0])
    with pytest.raises(ValueError, match="sigmas"):
        exact_output_law(sampling.sample_euler_maruyama, [0.0], [[1.0]], [1.0])
    with pytest.raises(ValueError, match="S1 must be positive definite"):
        gaussian_kl([0.0], [[1.0]], [0.0], [[-1.0]])
    with pytest.raises(ValueError, match="m0 and m1"):
        gaussian_kl([0.0], [[1.0]], [0.0, 0.0], torch.eye(2))


def test_kl_closed_forms():
    m0, v0, m1, v1 = 0.3, 0.5, -0.2, 1.7
    one_d = 0.5 * (v0 / v1 + (m1 - m0) ** 2 / v1 - 1.0 + math.log(v1 / v0))
    assert gaussian_kl([m0], [[v0]], [m1], [[v1]]) == pytest.approx(one_d, rel=1e-14)
    S0, S1 = spd(5, 2), spd(5, 3)
    a, b = torch.linspace(-1, 1, 5, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    inv = torch.linalg.inv(S1)
    direct = 0.5 * (torch.trace(inv @ S0) + (b - a) @ inv @ (b - a) - 5 + torch.logdet(S1) - torch.logdet(S0))
    assert gaussian_kl(a, S0, b, S1) == pytest.approx(float(direct), rel=1e-12)
    assert gaussian_kl(a, S0, a, S0) == pytest.approx(0.0, abs=1e-15)


def test_kl_keeps_relative_accuracy_for_tiny_divergences():
    """KL(N(0, 1 + e) || N(0, 1)) = (e - log1p(e))/2 ~ e^2/4: 2.5e-13 at e = 1e-6, where the textbook formula
    (tr - d + log det) has nothing left but rounding."""
    eps = 1e-6
    assert gaussian_kl([0.0], [[1.0 + eps]], [0.0], [[1.0]]) == pytest.approx(0.5 * (eps - math.log1p(eps)), rel=1e-6)
