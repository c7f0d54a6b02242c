"""Log-likelihoods through the probability-flow ODE against exact answers (`fastdiff.toy.GaussianMixture`):
the exact-trace estimate converges to the closed form at the solver's order, Hutchinson's estimate is
unbiased for the same trajectory with variance falling as 1/n_probes, and both agree on a d = 16 Gaussian.
"""

from __future__ import annotations

import math

import pytest
import torch

import fastdiff
from fastdiff.density import LikelihoodResult, ode_log_likelihood
from fastdiff.toy import GaussianMixture

SIGMA_MIN, SIGMA_MAX = 0.01, 100.0


@pytest.fixture(scope="module")
def ring() -> GaussianMixture:
    return GaussianMixture.ring(k=4, radius=2.0, std=0.5)


@pytest.fixture(scope="module")
def points(ring) -> torch.Tensor:
    """Points at noise level sigma_min (data plus sigma_min noise): log p there is ring.log_prob(x, sigma_min)."""
    return ring.sample(6, generator=torch.Generator().manual_seed(0), sigma=SIGMA_MIN)


def grid(n: int) -> torch.Tensor:
    return fastdiff.get_sigmas("karras", n, SIGMA_MIN, SIGMA_MAX)  # decreasing, ending in 0: accepted as is


def test_exact_trace_matches_closed_form_on_a_fine_grid(ring, points):
    exact = ring.log_prob(points, SIGMA_MIN)
    lp = ode_log_likelihood(ring.denoiser, points, grid(128), estimator="exact")
    assert lp.shape == (6,) and lp.dtype == torch.float64
    assert (lp - exact).abs().max().item() < 0.01
    # the default prior N(0, sigma_max^2 I) against the exact noised density at sigma_max: |mu|^2 / sigma_max^2 scale
    exact_prior = ode_log_likelihood(ring.denoiser, points, grid(128), estimator="exact",
                                     prior=lambda x: ring.log_prob(x, SIGMA_MAX))
    assert (exact_prior - lp).abs().max().item() < 1e-3


@pytest.mark.parametrize(("solver", "order"), [("euler", 1), ("heun", 2)])
def test_error_falls_at_the_solvers_order(ring, points, solver, order):
    """Halving the steps (nested grids, uniform in log sigma) divides the error by about 2^order."""
    exact = ring.log_prob(points, SIGMA_MIN)
    errors = []
    for n in (20, 40, 80):
        sigmas = torch.logspace(math.log10(SIGMA_MIN), math.log10(SIGMA_MAX), n + 1, dtype=torch.float64)
        lp = ode_log_likelihood(ring.denoiser, points, sigmas, estimator="exact", solver=solver,
                                prior=lambda x: ring.log_prob(x, SIGMA_MAX))
        errors.append((lp - exact).abs().max().item())
    slopes = [math.log2(a / b) for a, b in zip(errors[:-1], errors[1:], strict=True)]
    assert all(abs(s - order) < 0.3 for s in slopes), (errors, slopes)


def _hutchinson_runs(ring, point, probe, n_probes, batch, sigmas):
    copies = point.expand(batch, -1).contiguous()
    seeds = [10_000 * n_probes + b for b in range(batch)]
    return ode_log_likelihood(ring.denoiser, copies, sigmas, n_probes=n_probes, probe=probe, seed=seeds)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_and_its_variance_falls_as_one_over_n_probes(ring, points, probe):
    """Copies of one point with independent probe seeds share the ODE trajectory (it depends on D only), so the
    spread of their estimates is the estimator's. Mean within 3 standard errors of the exact-trace value on the
    same grid; var(1 probe) / var(4 probes) = 4 within +-30% (about 3 standard errors of the ratio at 600 runs)."""
    sigmas = grid(16)
    batch = 600
    exact = ode_log_likelihood(ring.denoiser, points[:1], sigmas, estimator="exact")[0].item()
    variances = {}
    for n_probes in (1, 4):
        runs = _hutchinson_runs(ring, points[:1], probe, n_probes, batch, sigmas)
        stderr = runs.std().item() / math.sqrt(batch)
        assert abs(runs.mean().item() - exact) < 3 * stderr, (n_probes, runs.mean().item(), exact, stderr)
        variances[n_probes] = runs.var().item()
    assert variances[1] > 0
    assert 2.8 < variances[1] / variances[4] < 5.2, variances


def test_estimators_agree_with_the_closed_form_on_a_16d_gaussian():
    """Exact trace: within 0.04 nats of the closed form on 160 Karras steps (measured 0.16 / 0.040 / 0.010 at
    64 / 128 / 256 steps: second order). Hutchinson: within 3 standard errors of the exact trace on one grid."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(16, 16, dtype=torch.float64, generator=g) / 4
    cov = a @ a.T + 0.1 * torch.eye(16, dtype=torch.float64)
    target = GaussianMixture.gaussian(torch.randn(16, dtype=torch.float64, generator=g), cov)
    x0 = target.sample(3, generator=g, sigma=SIGMA_MIN)
    closed = target.log_prob(x0, SIGMA_MIN)
    fine = ode_log_likelihood(target.denoiser, x0, grid(160), estimator="exact", prior=lambda x: target.log_prob(x, SIGMA_MAX))
    assert (fine - closed).abs().max().item() < 0.04
    sigmas = grid(24)
    exact = ode_log_likelihood(target.denoiser, x0, sigmas, estimator="exact")
    batch = 200
    for probe in ("rademacher", "gaussian"):
        copies = x0.repeat_interleave(batch, dim=0)
        runs = ode_log_likelihood(target.denoiser, copies, sigmas, n_probes=2, probe=probe, seed=7).view(3, batch)
        stderr = runs.std(dim=1) / math.sqrt(batch)
        assert bool(((runs.mean(dim=1) - exact).abs() < 3 * stderr).all()), (probe, runs.mean(dim=1) - exact, stderr)


def test_result_counts_and_backends_agree(ring, points):
    sigmas = grid(8)  # 8 positive entries: 7 Heun steps
    info = ode_log_likelihood(ring.denoiser, points, sigmas, n_probes=3, seed=4, return_info=True)
    assert isinstance(info, LikelihoodResult)
    assert info.nfe == 14 and info.n_vjp == 42
    torch.testing.assert_close(info.log_prob, info.prior_log_prob + info.divergence, rtol=0, atol=0)
    assert info.x_noise.shape == points.shape
    ref = ode_log_likelihood(ring.denoiser, points, sigmas, n_probes=3, seed=4, backend="reference")
    torch.testing.assert_close(info.log_prob, ref, rtol=1e-12, atol=1e-12)
    euler = ode_log_likelihood(ring.denoiser, points, sigmas, estimator="exact", solver="euler", return_info=True)
    assert euler.nfe == 7 and euler.n_vjp == 14


def test_grid_orientation_and_batch_invariance(ring, points):
    decreasing = grid(10)
    increasing = decreasing[:-1].flip(0)
    a = ode_log_likelihood(ring.denoiser, points, decreasing, seed=[1, 2, 3, 4, 5, 6])
    b = ode_log_likelihood(ring.denoiser, points, increasing.tolist(), seed=[1, 2, 3, 4, 5, 6])
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    alone = ode_log_likelihood(ring.denoiser, points[2:4], decreasing, seed=[3, 4])
    torch.testing.assert_close(alone, a[2:4], rtol=1e-12, atol=1e-12)
    again = ode_log_likelihood(ring.denoiser, points, decreasing, seed=[1, 2, 3, 4, 5, 6])
    assert torch.equal(a, again)


def test_float32_input(ring, points):
    lp = ode_log_likelihood(ring.denoiser, points.float(), grid(128), estimator="exact")
    assert lp.dtype == torch.float64
    assert (lp - ring.log_prob(points, SIGMA_MIN)).abs().max().item() < 0.02


def test_bad_arguments(ring, points):
    sigmas = grid(4)
    with pytest.raises(ValueError, match="n_probes must be in"):
        ode_log_likelihood(ring.denoiser, points, sigmas, n_probes=0)
    with pytest.raises(TypeError, match="n_probes must be an int"):
        ode_log_likelihood(ring.denoiser, points, sigmas, n_probes=2.0)
    with pytest.raises(ValueError, match="estimator must be one of"):
        ode_log_likelihood(ring.denoiser, points, sigmas, estimator="skilling")
    with pytest.raises(ValueError, match="probe must be one of"):
        ode_log_likelihood(ring.denoiser, points, sigmas, probe="sphere")
    with pytest.raises(ValueError, match="solver must be one of"):
        ode_log_likelihood(ring.denoiser, points, sigmas, solver="rk45")
    with pytest.raises((RuntimeError, ValueError), match="backend='cuda'"):
        ode_log_likelihood(ring.denoiser, points, sigmas, backend="cuda")
    with pytest.raises(ValueError, match="at least two positive entries"):
        ode_log_likelihood(ring.denoiser, points, [1.0, 0.0])
    with pytest.raises(ValueError, match="strictly monotone"):
        ode_log_likelihood(ring.denoiser, points, [0.1, 1.0, 0.5, 2.0])
    with pytest.raises(TypeError, match="denoiser must be callable"):
        ode_log_likelihood(None, points, sigmas)
    with pytest.raises(ValueError, match="prior must return"):
        ode_log_likelihood(ring.denoiser, points, sigmas, prior=lambda x: x)
    with pytest.raises(ValueError, match="does not depend differentiably"):
        ode_log_likelihood(lambda x, s: x.detach() * 0, points, sigmas)
    with pytest.raises(ValueError, match="x0 must have shape"):
        ode_log_likelihood(ring.denoiser, points[:0], sigmas)
