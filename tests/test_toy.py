"""fastdiff.toy: the exact Gaussian-mixture oracles against independent computations (scipy densities,
autograd, numerical integration) and their samplers against the laws they claim (moments, KS tests)."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.special import logsumexp

import fastdiff
from fastdiff.toy import GaussianMixture

F64 = torch.float64


def full_mixture():
    """Three 3-D components with correlated covariances and unequal weights."""
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 3, 3, generator=g, dtype=F64)
    covs = a @ a.mT + 0.3 * torch.eye(3, dtype=F64)
    return GaussianMixture(torch.randn(3, 3, generator=g, dtype=F64) * 2, covs=covs, weights=[0.2, 0.3, 0.5])


def isotropic_mixture():
    return GaussianMixture([[0.0, 1.0], [2.0, -1.0], [-3.0, 0.5]], stds=[0.3, 0.8, 0.5], weights=[1.0, 2.0, 3.0])


def diagonal_mixture():
    covs = torch.diag_embed(torch.tensor([[0.5, 2.0], [1.0, 0.1]], dtype=F64))
    return GaussianMixture([[1.0, 0.0], [-1.0, 2.0]], covs=covs, weights=[0.6, 0.4])


def mixture_1d():
    return GaussianMixture([[-2.0], [1.0], [3.0]], stds=[0.3, 0.5, 0.2], weights=[0.3, 0.5, 0.2])


MIXTURES = [full_mixture, isotropic_mixture, diagonal_mixture, mixture_1d]


def points(gm, n=7, scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, gm.dim, generator=g, dtype=F64) * scale


def scipy_components(gm, x, sigma):
    """log pi_k + log N(x; mu_k, Sigma_k + sigma^2 I) by scipy, [B, K]."""
    covs = gm.covs.numpy() + sigma**2 * np.eye(gm.dim)
    parts = zip(gm.weights.tolist(), gm.means.numpy(), covs, strict=True)
    logs = [math.log(w) + stats.multivariate_normal(m, c).logpdf(x) for w, m, c in parts]
    return np.stack(logs, axis=1).reshape(x.shape[0], gm.n_components)


def scipy_log_prob(gm, x, sigma):
    return logsumexp(scipy_components(gm, x, sigma), axis=1)


def mixture_cdf_1d(gm, y, sigma, tail="cdf"):
    """F_sigma(y) of a 1-D mixture by scipy, or with tail="sf" 1 - F_sigma(y) (accurate in the upper tail)."""
    sds = np.sqrt(gm.covs[:, 0, 0].numpy() + sigma**2)
    law = getattr(stats.norm, tail)
    return sum(w * law(y, m, s) for w, m, s in zip(gm.weights.numpy(), gm.means[:, 0].numpy(), sds, strict=True))


@pytest.mark.parametrize("make", MIXTURES)
@pytest.mark.parametrize("sigma", [0.0, 0.7, 5.0])
def test_log_prob_matches_scipy(make, sigma):
    gm = make()
    x = points(gm)
    np.testing.assert_allclose(gm.log_prob(x, sigma).numpy(), scipy_log_prob(gm, x, sigma), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make", MIXTURES)
def test_per_sample_sigma_matches_rowwise(make):
    gm = make()
    x = points(gm, n=4)
    sigma = torch.tensor([0.0, 0.3, 2.0, 40.0], dtype=F64)
    for name in ("log_prob", "score", "denoiser", "score_jacobian", "responsibilities"):
        batched = getattr(gm, name)(x, sigma)
        rows = torch.cat([getattr(gm, name)(x[i : i + 1], float(sigma[i])) for i in range(4)])
        torch.testing.assert_close(batched, rows, rtol=1e-13, atol=1e-13, msg=name)


@pytest.mark.parametrize("make", MIXTURES)
@pytest.mark.parametrize("sigma", [0.0, 0.5, 3.0])
def test_score_is_gradient_of_log_prob(make, sigma):
    gm = make()
    x = points(gm).requires_grad_()
    (grad,) = torch.autograd.grad(gm.log_prob(x, sigma).sum(), x)
    torch.testing.assert_close(gm.score(x.detach(), sigma), grad, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("make", MIXTURES)
@pytest.mark.parametrize("sigma", [0.0, 0.5, 3.0])
def test_score_jacobian_is_jacobian_of_score(make, sigma):
    gm = make()
    x = points(gm)
    jac = torch.autograd.functional.jacobian(lambda z: gm.score(z, sigma).sum(0), x).permute(1, 0, 2)
    torch.testing.assert_close(gm.score_jacobian(x, sigma), jac, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("make", MIXTURES)
def test_denoiser_is_tweedie(make):
    gm = make()
    x = points(gm)
    for sigma in (0.0, 0.4, 80.0):
        torch.testing.assert_close(gm.denoiser(x, sigma), x + sigma**2 * gm.score(x, sigma), rtol=1e-10, atol=1e-10)


def test_denoiser_is_posterior_mean_by_quadrature():
    """E[x0 | x0 + sigma eps = x] by numerical integration over the 1-D prior (trapezoid rule on a fine grid,
    spectrally accurate for these smooth, fast-decaying integrands), independent of the closed form."""
    gm = mixture_1d()
    sigma = 0.8
    x = np.array([-3.0, -0.5, 0.7, 2.5, 6.0])
    u = np.linspace(-12.0, 12.0, 48_001)
    prior = sum(w * stats.norm.pdf(u, m, s) for w, m, s in zip([0.3, 0.5, 0.2], [-2.0, 1.0, 3.0], [0.3, 0.5, 0.2], strict=True))
    weight = prior * stats.norm.pdf(x[:, None], u, sigma)
    expected = np.trapezoid(u * weight, u, axis=1) / np.trapezoid(weight, u, axis=1)
    actual = gm.denoiser(torch.from_numpy(x)[:, None], sigma)[:, 0].numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-11, atol=1e-12)


def test_responsibilities():
    gm = full_mixture()
    x = points(gm)
    r = gm.responsibilities(x, 0.6)
    log_joint = scipy_components(gm, x, 0.6)
    np.testing.assert_allclose(r.numpy(), np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True)), rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_inputs(dtype):
    gm = isotropic_mixture()
    x = points(gm)
    exact = gm.denoiser(x.to(dtype).to(F64), torch.full((7,), 0.5, dtype=F64))
    out = gm.denoiser(x.to(dtype), torch.full((7,), 0.5, dtype=dtype))
    assert out.dtype == dtype and gm.score(x.to(dtype), 0.5).dtype == dtype
    assert gm.log_prob(x.to(dtype), 0.5).dtype == F64
    torch.testing.assert_close(out.to(F64), exact, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("make", [full_mixture, isotropic_mixture])
@pytest.mark.parametrize("sigma", [0.0, 1.5])
def test_sample_moments(make, sigma):
    """Mean within 5 standard errors per coordinate; covariance within 5 standard errors of each entry."""
    gm = make()
    n = 200_000
    xs = gm.sample(n, torch.Generator().manual_seed(3), sigma=sigma)
    assert xs.dtype == F64 and xs.shape == (n, gm.dim)
    mean = sum(w * m for w, m in zip(gm.weights, gm.means, strict=True))
    torch.testing.assert_close(gm.mean, mean, rtol=1e-14, atol=1e-14)
    cov = gm.cov_at(sigma)
    se_mean = (cov.diagonal() / n).sqrt()
    assert ((xs.mean(0) - mean).abs() <= 5 * se_mean).all()
    centred = xs - mean
    entries = centred[:, :, None] * centred[:, None, :]
    se_cov = entries.std(0) / math.sqrt(n)
    assert ((entries.mean(0) - cov).abs() <= 5 * se_cov).all()


def test_sample_is_reproducible_and_matches_1d_law():
    gm = mixture_1d()
    a = gm.sample(20_000, torch.Generator().manual_seed(5), sigma=0.5)
    assert torch.equal(a, gm.sample(20_000, torch.Generator().manual_seed(5), sigma=0.5))
    assert stats.kstest(a[:, 0].numpy(), lambda y: mixture_cdf_1d(gm, y, 0.5)).pvalue > 1e-3


def test_gaussian_and_ring_constructors():
    gm = GaussianMixture.gaussian([1.0, -2.0], [[2.0, 0.5], [0.5, 1.0]])
    assert gm.n_components == 1 and gm.dim == 2
    torch.testing.assert_close(gm.cov_at(0.5), torch.tensor([[2.25, 0.5], [0.5, 1.25]], dtype=F64))
    torch.testing.assert_close(gm.mean, torch.tensor([1.0, -2.0], dtype=F64))
    iso = GaussianMixture.gaussian(1.5, 0.25)
    torch.testing.assert_close(iso.cov_at(0.0), torch.tensor([[0.0625]], dtype=F64))
    ring = GaussianMixture.ring(k=6, radius=2.0, std=0.1)
    assert ring.means.shape == (6, 2) and torch.allclose(ring.means.norm(dim=1), torch.full((6,), 2.0, dtype=F64))
    torch.testing.assert_close(ring.mean, torch.zeros(2, dtype=F64), rtol=0, atol=1e-14)
    torch.testing.assert_close(ring.weights, torch.full((6,), 1 / 6, dtype=F64))


# ---------------------------------------------------------------- exact probability-flow ODE maps
def single_gaussian():
    return GaussianMixture.gaussian([1.0, -0.5, 2.0], [[1.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 0.05]])


def finite_difference_check(gm, x0, sigma0, sigmas):
    """x(sigma) = ode_solution(x0, sigma0, sigma) satisfies dx/dsigma = (x - D(x, sigma)) / sigma (central differences)."""
    for sigma in sigmas:
        h = 1e-4 * sigma
        x = gm.ode_solution(x0, sigma0, sigma)
        slope = (gm.ode_solution(x0, sigma0, sigma + h) - gm.ode_solution(x0, sigma0, sigma - h)) / (2 * h)
        torch.testing.assert_close(slope, (x - gm.denoiser(x, sigma)) / sigma, rtol=1e-6, atol=1e-6)


def test_single_gaussian_ode_satisfies_the_ode():
    gm = single_gaussian()
    x0 = points(gm, n=16, scale=20.0)
    finite_difference_check(gm, x0, 20.0, [15.0, 2.0, 0.3, 0.02])


def test_single_gaussian_ode_pushes_the_law():
    """Samples of q_s mapped to sigma_to have q_t's mean and covariance (5 standard errors); with sigma a [B] tensor too."""
    gm = single_gaussian()
    n = 100_000
    xs = gm.sample(n, torch.Generator().manual_seed(7), sigma=10.0)
    for target in (0.0, 0.5):
        ys = gm.ode_solution(xs, 10.0, torch.full((n,), target, dtype=F64))
        cov = gm.cov_at(target)
        assert ((ys.mean(0) - gm.mean).abs() <= 5 * (cov.diagonal() / n).sqrt()).all()
        centred = ys - gm.mean
        entries = centred[:, :, None] * centred[:, None, :]
        assert ((entries.mean(0) - cov).abs() <= 5 * entries.std(0) / math.sqrt(n)).all()


def test_single_gaussian_ode_round_trip_and_identity():
    gm = single_gaussian()
    x = points(gm, scale=50.0)
    torch.testing.assert_close(gm.ode_solution(gm.ode_solution(x, 80.0, 0.002), 0.002, 80.0), x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gm.ode_solution(x, 3.0, 3.0), x, rtol=1e-15, atol=1e-14)


def test_mixture_1d_ode_is_the_quantile_map():
    """F_t(y) = F_s(x) to 1e-9 relative in each tail (scipy cdf below the median, sf above it, out to
    probabilities ~1e-15), and a round trip to 1e-10."""
    gm = mixture_1d()
    x = torch.linspace(-40.0, 40.0, 161, dtype=F64)[:, None]
    y = gm.ode_solution(x, 5.0, 0.1)
    xs, ys = x[:, 0].numpy(), y[:, 0].numpy()
    lower = xs < 0
    for side, tail in ((lower, "cdf"), (~lower, "sf")):
        expected = mixture_cdf_1d(gm, xs[side], 5.0, tail)
        np.testing.assert_allclose(mixture_cdf_1d(gm, ys[side], 0.1, tail), expected, rtol=1e-9, atol=0)
    torch.testing.assert_close(gm.ode_solution(y, 0.1, 5.0), x, rtol=1e-10, atol=1e-10)


def test_mixture_1d_ode_satisfies_the_ode():
    gm = mixture_1d()
    x0 = torch.linspace(-30.0, 30.0, 25, dtype=F64)[:, None]
    finite_difference_check(gm, x0, 10.0, [8.0, 1.0, 0.3, 0.05])


def test_mixture_1d_ode_pushes_the_law():
    gm = mixture_1d()
    xs = gm.sample(20_000, torch.Generator().manual_seed(11), sigma=4.0)
    ys = gm.ode_solution(xs, 4.0, 0.05)
    assert stats.kstest(ys[:, 0].numpy(), lambda y: mixture_cdf_1d(gm, y, 0.05)).pvalue > 1e-3


def test_mixture_1d_ode_per_sample_sigmas():
    gm = mixture_1d()
    x = points(gm, n=5)
    s_from = torch.tensor([1.0, 2.0, 5.0, 9.0, 0.5], dtype=F64)
    s_to = torch.tensor([0.1, 3.0, 0.0, 0.01, 0.2], dtype=F64)
    rows = torch.cat([gm.ode_solution(x[i : i + 1], float(s_from[i]), float(s_to[i])) for i in range(5)])
    torch.testing.assert_close(gm.ode_solution(x, s_from, s_to), rows, rtol=1e-13, atol=1e-13)


def test_ode_solution_has_no_closed_form_for_multivariate_mixtures():
    with pytest.raises(NotImplementedError, match="K = 3, d = 2"):
        isotropic_mixture().ode_solution(torch.zeros(1, 2), 1.0, 0.5)


def test_euler_on_the_exact_denoiser_approaches_the_exact_ode():
    """gm.denoiser plugs into fastdiff.sample; Euler's error against the exact map falls with the step count."""
    gm = single_gaussian()
    x = gm.sample(64, torch.Generator().manual_seed(2), sigma=20.0)
    exact = gm.ode_solution(x, 20.0, 0.01)
    errors = []
    for n in (25, 100):
        sigmas = fastdiff.get_sigmas("karras", n, 0.01, 20.0)[:-1]
        out = fastdiff.sample(gm.denoiser, x, sigmas, "euler")
        errors.append((out - exact).abs().max().item())
    assert errors[1] < errors[0] / 3 and errors[1] < 0.05


# ---------------------------------------------------------------- exact reverse transition
def test_posterior_sample_1d_law():
    """x_s ~ q_s, then one exact reverse step to t: KS against q_t; and to 0 against the data law."""
    gm = mixture_1d()
    g = torch.Generator().manual_seed(13)
    xs = gm.sample(20_000, g, sigma=3.0)
    for t in (0.7, 0.0):
        ys = gm.posterior_sample(xs, 3.0, t, generator=g)
        assert stats.kstest(ys[:, 0].numpy(), lambda y, t=t: mixture_cdf_1d(gm, y, t)).pvalue > 1e-3


def test_posterior_chain_reaches_the_data_law():
    """Ten exact reverse steps from sigma = 20 in 2-D (full covariances): moments of the data within 5 standard errors."""
    covs = [[[0.5, 0.3], [0.3, 0.4]], [[0.2, -0.1], [-0.1, 0.6]]]
    gm = GaussianMixture([[2.0, 0.0], [-1.0, 1.5]], covs=covs, weights=[0.7, 0.3])
    g = torch.Generator().manual_seed(17)
    n = 50_000
    x = gm.sample(n, g, sigma=20.0)
    grid = fastdiff.get_sigmas("karras", 10, 0.05, 20.0).tolist()
    for s, t in zip(grid[:-1], grid[1:], strict=True):
        x = gm.posterior_sample(x, s, t, generator=g)
    cov = gm.cov_at(0.0)
    assert ((x.mean(0) - gm.mean).abs() <= 5 * (cov.diagonal() / n).sqrt()).all()
    centred = x - gm.mean
    entries = centred[:, :, None] * centred[:, None, :]
    assert ((entries.mean(0) - cov).abs() <= 5 * entries.std(0) / math.sqrt(n)).all()


def test_posterior_sample_keeps_dtype_and_checks_order():
    gm = isotropic_mixture()
    x = points(gm).float()
    assert gm.posterior_sample(x, 1.0, 0.5, torch.Generator().manual_seed(0)).dtype == torch.float32
    with pytest.raises(ValueError, match="sigma_next must be smaller than sigma"):
        gm.posterior_sample(x, 1.0, 1.0)


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"means": [1.0, 2.0], "stds": 1.0}, ValueError, r"means must have shape \[K, d\]"),
        ({"means": [[0.0]], "stds": None}, ValueError, "exactly one of stds"),
        ({"means": [[0.0]], "stds": 1.0, "covs": [[[1.0]]]}, ValueError, "exactly one of stds"),
        ({"means": [[0.0], [1.0]], "stds": [1.0, 0.0]}, ValueError, "stds must be positive"),
        ({"means": [[0.0], [1.0]], "stds": [1.0, 2.0, 3.0]}, ValueError, r"stds must be a scalar or have shape \[K\] = \[2\]"),
        ({"means": [[0.0, 0.0]], "covs": [[[1.0, 2.0], [2.0, 1.0]]]}, ValueError, "positive definite, got component 0"),
        ({"means": [[0.0, 0.0]], "covs": [[[1.0, 0.1], [0.0, 1.0]]]}, ValueError, "covs must be symmetric"),
        ({"means": [[0.0, 0.0]], "covs": [[1.0, 0.0], [0.0, 1.0]]}, ValueError, r"covs must have shape \[K, d, d\]"),
        ({"means": [[0.0], [1.0]], "stds": 1.0, "weights": [0.5, -0.5]}, ValueError, "weights must be positive"),
        ({"means": [[0.0], [1.0]], "stds": 1.0, "weights": [1.0]}, ValueError, r"weights must have shape \[K\] = \[2\]"),
        ({"means": [[float("nan")]], "stds": 1.0}, ValueError, "means contains NaN"),
        ({"means": "abc", "stds": 1.0}, TypeError, "means must be"),
    ],
)
def test_constructor_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        GaussianMixture(**kwargs)


def test_call_validation():
    gm = isotropic_mixture()
    with pytest.raises(ValueError, match=r"x must have shape \[B, d\] with d = 2"):
        gm.score(torch.zeros(3, 4), 1.0)
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        gm.score([[0.0, 0.0]], 1.0)
    with pytest.raises(TypeError, match="floating dtype"):
        gm.score(torch.zeros(3, 2, dtype=torch.int64), 1.0)
    with pytest.raises(ValueError, match="sigma must be finite and non-negative"):
        gm.denoiser(torch.zeros(3, 2), -1.0)
    with pytest.raises(ValueError, match=r"sigma must be a float, a 0-d tensor or a \[B\] = \[3\] tensor"):
        gm.denoiser(torch.zeros(3, 2), torch.ones(2))
    with pytest.raises(ValueError, match="sigma_to must be finite"):
        mixture_1d().ode_solution(torch.zeros(3, 1), 1.0, float("nan"))
    with pytest.raises(ValueError, match="n must be >= 1"):
        gm.sample(0)
    with pytest.raises(ValueError, match="sigma must be a finite non-negative number"):
        gm.sample(3, sigma=-0.1)
    with pytest.raises(ValueError, match="cov_or_std must be a scalar std or a"):
        GaussianMixture.gaussian([0.0, 0.0], [1.0, 2.0])


# ----------------------------------------------------------------- the mixture as a flow model
def flow_log_prob(gm, x_t, t):
    """log p_t(x_t) of x_t = (1 - t) x0 + t eps built independently: sum_k pi_k N((1 - t) mu_k, (1 - t)^2 Sigma_k + t^2 I)."""
    eye = torch.eye(gm.dim, dtype=F64)
    parts = zip(gm.means, gm.covs, strict=True)
    laws = [torch.distributions.MultivariateNormal((1 - t) * m, (1 - t) ** 2 * c + t**2 * eye) for m, c in parts]
    logs = torch.stack([w.log() + law.log_prob(x_t) for w, law in zip(gm.weights, laws, strict=True)], dim=-1)
    return torch.logsumexp(logs, dim=-1)


@pytest.mark.parametrize("make", MIXTURES)
@pytest.mark.parametrize("t", [0.05, 0.5, 0.95])
def test_flow_velocity_is_the_score_relation(make, t):
    """v = (x_t - E[x0 | x_t]) / t = -(x_t + t grad log p_t(x_t)) / (1 - t), the score by autograd of the density."""
    gm = make()
    x = points(gm).requires_grad_()
    (score,) = torch.autograd.grad(flow_log_prob(gm, x, t).sum(), x)
    x = x.detach()
    torch.testing.assert_close(gm.flow_velocity(x, t), -(x + t * score) / (1 - t), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("make", MIXTURES)
def test_flow_velocity_is_the_ve_denoiser_identity(make):
    """v = (x_t - D(x_t / (1 - t), t / (1 - t))) / t with per-sample t as a [B] tensor."""
    gm = make()
    x = points(gm)
    t = torch.linspace(0.02, 0.98, x.shape[0], dtype=F64)
    expected = (x - gm.denoiser(x / (1 - t[:, None]), t / (1 - t))) / t[:, None]
    torch.testing.assert_close(gm.flow_velocity(x, t), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("make", MIXTURES)
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_flow_velocity_at_the_ends(make, dtype):
    """t = 1: x_t is independent of x0, v = x_t - E[x0]; t = 0: E[eps | x0] = 0, v = -x0; both limits continuous
    (|v(t) - v(end)| = O(distance to the end), here 1e-7 away)."""
    gm = make()
    x = points(gm).to(dtype)
    exact = x.to(F64)
    ends = {1.0: exact - gm.mean, 0.0: -exact}
    tol = {"rtol": 1e-6, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-14, "atol": 1e-14}
    for t, limit in ends.items():
        v = gm.flow_velocity(x, t)
        assert v.dtype == dtype
        torch.testing.assert_close(v.to(F64), limit, **tol)
        near = gm.flow_velocity(exact, abs(t - 1e-7))
        assert (near - limit).abs().max() < 1e-5
    t = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.25, 0.75, 1.0], dtype=dtype)
    torch.testing.assert_close(gm.flow_velocity(x, t).to(F64), gm.flow_velocity(exact, t.to(F64)), rtol=1e-5, atol=1e-5)


def test_single_gaussian_flow_ode_from_pure_noise_is_the_square_root_map():
    """From t = 1 (x_t = n, unit noise) the flow ODE ends at x0 = mu + Sigma^(1/2) n, the symmetric square root;
    and its t-derivative (central differences) is the velocity."""
    gm = single_gaussian()
    n = points(gm, n=16, scale=1.0)
    lam, rot = torch.linalg.eigh(gm.covs[0])
    root = rot @ torch.diag(lam.sqrt()) @ rot.T
    torch.testing.assert_close(gm.flow_ode_solution(n, 1.0, 0.0), gm.mean + n @ root, rtol=1e-13, atol=1e-13)
    for t in (0.9, 0.4, 0.05):
        h = 1e-5
        slope = (gm.flow_ode_solution(n, 1.0, t + h) - gm.flow_ode_solution(n, 1.0, t - h)) / (2 * h)
        torch.testing.assert_close(slope, gm.flow_velocity(gm.flow_ode_solution(n, 1.0, t), t), rtol=1e-7, atol=1e-7)


def test_flow_ode_reference_solve_matches_the_closed_forms():
    """The RK4 reference solve (taken for K > 1) against the exact maps: one Gaussian written as two identical
    components (the closed form of K = 1), and a 1-D mixture (the VE quantile map, x_ve = x_t / (1 - t))."""
    one = single_gaussian()
    twice = GaussianMixture(one.means.repeat(2, 1), covs=one.covs.repeat(2, 1, 1))
    n = points(one, n=8, scale=1.0)
    exact = one.flow_ode_solution(n, 1.0, 0.0)
    torch.testing.assert_close(twice.flow_ode_solution(n, 1.0, 0.0, steps=256), exact, rtol=1e-9, atol=1e-9)
    gm = mixture_1d()
    x = points(gm, n=8, scale=1.0)
    expected = gm.ode_solution(x / 0.1, 9.0, 0.0)
    torch.testing.assert_close(gm.flow_ode_solution(x, 0.9, 0.0, steps=512), expected, rtol=1e-8, atol=1e-8)


def test_flow_validation():
    gm = isotropic_mixture()
    with pytest.raises(ValueError, match=r"t must lie in \[0, 1\] \(flow time\), got maximum 1.5"):
        gm.flow_velocity(torch.zeros(3, 2), torch.tensor([0.5, 1.5, 1.0]))
    with pytest.raises(ValueError, match="t must be finite and non-negative"):
        gm.flow_velocity(torch.zeros(3, 2), -0.1)
    with pytest.raises(ValueError, match="t_to must lie in"):
        gm.flow_ode_solution(torch.zeros(3, 2), 1.0, 2.0)
    with pytest.raises(ValueError, match="steps must be >= 1"):
        gm.flow_ode_solution(torch.zeros(3, 2), 1.0, 0.0, steps=0)
