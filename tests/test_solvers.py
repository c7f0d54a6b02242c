"""Behaviour every step rule in `fastdiff.SOLVERS` shares: shapes and dtypes (fp16/bf16 in, float32 arithmetic
inside), no NaN at the final sigma = 0, the documented number of model evaluations, one k-diffusion callback per
step, seeded determinism, batch invariance under per-sample seeds, progress bars; then the option checks and the
special cases in which two rules coincide, and fastdiff's own rules against direct loops of their formulas."""

from __future__ import annotations

import math

import pytest
import torch
from backend_params import backend_device_pairs

import fastdiff
from fastdiff import sampling
from fastdiff.solvers import make_solver

NAMES = sorted(fastdiff.SOLVERS)
SHAPE = (3, 2, 5)
GRID = fastdiff.get_sigmas("karras", 6, 0.02, 20.0)  # 6 steps, the last one to 0

# Model evaluations per step, as each solver module documents: two-stage rules spend one on the step to 0.
ONE_PER_STEP = {
    "dpmpp_3m", "lms",
    "gradient_estimation", "deis",
    "res_multistep", "res_multistep_ancestral",
    "euler", "dpmpp_2m", "ipndm", "euler_ancestral", "euler_maruyama", "dpmpp_2m_sde", "dpmpp_3m_sde", "exp_em", "srk",
    "ipndm_v", "unipc", "er_sde", "sa_solver",
}
TWO_PER_STEP = {"heun", "srk_score", "srk_dp", "seeds_2"}
THREE_PER_STEP = {"seeds_3", "dpm_solver"}
PECE = {"sa_solver_pece"}  # two per step after the first, which has no corrector


def elementwise_mixture(x, sigma):
    """Exact denoiser of the 1-D mixture 0.4 N(-1, 0.3^2) + 0.6 N(1.5, 0.5^2) applied to every element,
    computed in float32 (float64 for float64 input) and returned in x's dtype."""
    work = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    s2 = sigma.to(work.dtype).view(-1, *([1] * (x.ndim - 1))) ** 2
    means, variances, weights = (-1.0, 1.5), (0.09, 0.25), (0.4, 0.6)
    logits, shrunk = [], []
    for m, v, w in zip(means, variances, weights, strict=True):
        c = v + s2
        logits.append(math.log(w) - 0.5 * (work - m) ** 2 / c - 0.5 * torch.log(c))
        shrunk.append(m + v / c * (work - m))
    r = torch.softmax(torch.stack(logits), dim=0)
    return (r * torch.stack(shrunk)).sum(0).to(x.dtype)


def rational_denoiser(x, sigma):
    """A nonlinear denoiser built from +, -, *, / only, which round identically at every batch size (SIMD and
    scalar paths of exp/log may differ in the last bit, which would blur the bitwise batch-invariance check)."""
    s2 = sigma.view(-1, *([1] * (x.ndim - 1))) ** 2
    return (0.25 * x + s2 * 0.5) / (0.25 + s2) + 0.2 * x / (1.0 + x * x)


def start(dtype=torch.float64, batch=SHAPE[0]):
    x = torch.randn((batch, *SHAPE[1:]), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (x * float(GRID[0])).to(dtype)


def expected_evaluations(name, sigmas):
    steps = len(sigmas) - 1
    if name in ONE_PER_STEP:
        return steps
    if name in TWO_PER_STEP:
        return 2 * steps - int(float(sigmas[-1]) == 0.0)
    if name in PECE:
        return 2 * steps - 1
    if name in THREE_PER_STEP:
        return 3 * steps - 2 * int(float(sigmas[-1]) == 0.0)
    raise AssertionError(f"evaluations per step of solver {name!r} not tabulated in this test: add it")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_finite(name, dtype):
    seen, trace = [], []

    def model(x, sigma):
        seen.append(x.dtype)
        return elementwise_mixture(x, sigma)

    out = fastdiff.sample(model, start(dtype), GRID, name, seed=0, callback=trace.append)
    assert out.shape == SHAPE and out.dtype == dtype
    assert bool(torch.isfinite(out).all())
    assert set(seen) == {dtype}
    state_dtype = torch.float64 if dtype == torch.float64 else torch.float32
    assert all(c["x"].dtype == c["denoised"].dtype == state_dtype for c in trace)


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 1e-2), (torch.bfloat16, 5e-2)])
@pytest.mark.parametrize("name", NAMES)
def test_half_precision_tracks_float32(name, dtype, tol):
    """The state stays float32, so only the model's input/output rounding separates fp16/bf16 from float32."""
    x = start(dtype)
    low = fastdiff.sample(elementwise_mixture, x, GRID, name, seed=0)
    full = fastdiff.sample(elementwise_mixture, x.float(), GRID, name, seed=0)
    assert float((low.float() - full).abs().max()) <= tol * float(full.abs().max())


@pytest.mark.parametrize("sigmas", [GRID, GRID[:-1]], ids=["to_zero", "to_sigma_min"])
@pytest.mark.parametrize("name", NAMES)
def test_model_evaluations(name, sigmas):
    calls = []

    def model(x, sigma):
        calls.append(float(sigma[0]))
        return elementwise_mixture(x, sigma)

    fastdiff.sample(model, start(), sigmas, name, seed=0)
    assert len(calls) == expected_evaluations(name, sigmas)
    assert calls[0] == float(sigmas[0]) and all(s > 0 for s in calls)
    if name in ONE_PER_STEP and not make_solver(name).stochastic:  # no stage points: once at each step's start
        assert calls == [float(s) for s in sigmas[:-1]]


@pytest.mark.parametrize("name", NAMES)
def test_callback_once_per_step(name):
    trace = []
    fastdiff.sample(elementwise_mixture, start(), GRID, name, seed=0, callback=trace.append)
    assert [c["i"] for c in trace] == list(range(len(GRID) - 1))
    for c, sigma in zip(trace, GRID[:-1].tolist(), strict=True):
        assert c.keys() == {"x", "i", "sigma", "sigma_hat", "denoised"}
        assert float(c["sigma"]) == sigma and float(c["sigma_hat"]) >= sigma
        assert c["x"].shape == c["denoised"].shape == SHAPE


@pytest.mark.parametrize("name", NAMES)
def test_seeds(name):
    """Same seed: bitwise the same sample. Another seed: a different sample exactly when the rule draws noise."""
    x = start()
    first, again, other = (fastdiff.sample(elementwise_mixture, x, GRID, name, seed=s) for s in (3, 3, 4))
    assert torch.equal(first, again)
    assert torch.equal(first, other) != make_solver(name).stochastic


@pytest.mark.parametrize("name", NAMES)
def test_batch_invariance_with_seed_lists(name):
    seeds = [11, 2**63 + 5, 7]
    x = start()
    batch = fastdiff.sample(rational_denoiser, x, GRID, name, seed=seeds)
    for b, seed in enumerate(seeds):
        alone = fastdiff.sample(rational_denoiser, x[b : b + 1], GRID, name, seed=[seed])
        assert torch.equal(alone[0], batch[b])


BACKENDS = [(device, backend) for backend, device in backend_device_pairs() if backend != "reference"]


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
@pytest.mark.parametrize("device, backend", BACKENDS, ids=[b for _, b in BACKENDS])
@pytest.mark.parametrize("name", NAMES)
def test_backends_agree_with_reference(name, device, backend, dtype, tol):
    """Every solver gives the reference backend's sample (same seed, noise included) on each usable fused backend."""
    status = fastdiff.backends()[backend]
    if not status.available:
        pytest.skip(f"backend {backend!r} unavailable: {status.reason}")
    x = start(dtype).to(device)
    sigmas = GRID.to(device)
    fused = fastdiff.sample(elementwise_mixture, x, sigmas, name, seed=5, backend=backend)
    reference = fastdiff.sample(elementwise_mixture, x, sigmas, name, seed=5, backend="reference")
    torch.testing.assert_close(fused, reference, rtol=tol, atol=tol * float(reference.abs().max()))


@pytest.mark.parametrize("name", NAMES)
def test_noise_sampler_calls(name):
    """A given noise_sampler is called only by rules that draw noise, and never on the step to 0."""
    calls = []

    def noise_sampler(sigma, sigma_next):
        calls.append((float(sigma), float(sigma_next)))
        return torch.randn(SHAPE, dtype=torch.float64)

    fastdiff.sample(elementwise_mixture, start(), GRID, name, noise_sampler=noise_sampler)
    assert bool(calls) == make_solver(name).stochastic
    assert all(s_next > 0.0 for _, s_next in calls)


@pytest.mark.parametrize("name", NAMES)
def test_progress_bar(name, capsys):
    fastdiff.sample(elementwise_mixture, start(), GRID, name, seed=0, progress=True)
    assert f"fastdiff {name}" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, options, exc, match",
    [
        ("dpmpp_2m_sde", {"solver_type": "euler"}, ValueError, r"solver_type must be one of \('midpoint', 'heun'\), got 'euler'"),
        ("dpmpp_2m_sde", {"eta": -0.5}, ValueError, r"eta must be in \[0.0, inf\], got -0.5"),
        ("dpmpp_3m_sde", {"s_noise": -1.0}, ValueError, r"s_noise must be in \[0.0, inf\], got -1.0"),
        ("euler_ancestral", {"eta": "1"}, TypeError, "eta must be a number, got str"),
        ("euler_maruyama", {"s_noise": float("nan")}, ValueError, "s_noise must be a finite number, got nan"),
        ("heun", {"s_churn": -1.0}, ValueError, "s_churn must be in"),
        ("ipndm", {"max_order": 5}, ValueError, r"max_order must be an int in \[1, 4\], got 5"),
        ("ipndm", {"max_order": 0}, ValueError, r"max_order must be an int in \[1, 4\], got 0"),
        ("ipndm", {"max_order": 2.0}, ValueError, r"max_order must be an int in \[1, 4\], got 2.0"),
    ],
)
def test_invalid_options(name, options, exc, match):
    with pytest.raises(exc, match=match):
        make_solver(name, **options)


@pytest.mark.parametrize(
    "name, options, stochastic",
    [
        ("euler_ancestral", {"eta": 0.0}, False),
        ("euler_ancestral", {"s_noise": 0.0}, False),
        ("dpmpp_2m_sde", {"eta": 0.0}, False),
        ("dpmpp_3m_sde", {"eta": 0.0}, False),
        ("euler_maruyama", {"s_noise": 0.0}, False),
        ("heun", {"s_churn": 1.0}, True),
        ("heun", {}, False),
    ],
)
def test_stochastic_flag_follows_options(name, options, stochastic):
    assert make_solver(name, **options).stochastic is stochastic


@pytest.mark.parametrize(
    "name, options, same_as, exact",
    [
        ("euler_ancestral", {"eta": 0.0}, "euler", True),
        ("ipndm", {"max_order": 1}, "euler", False),
        ("dpmpp_2m_sde", {"eta": 0.0}, "dpmpp_2m", False),
    ],
)
def test_special_cases_coincide(name, options, same_as, exact):
    """eta = 0 ancestral is Euler; first-order iPNDM is Euler; DPM-Solver++(2M) SDE with eta = 0 is DPM-Solver++(2M)."""
    x = start()
    ours = fastdiff.sample(elementwise_mixture, x, GRID, name, **options)
    reference = fastdiff.sample(elementwise_mixture, x, GRID, same_as)
    if exact:
        assert torch.equal(ours, reference)
    else:
        torch.testing.assert_close(ours, reference, rtol=1e-13, atol=1e-13)


def ipndm_loop(model, x, sigmas, max_order):
    """iPNDM written directly in eps (the form of LD3's samplers/ipndm.py), with the step to 0 as x - sigma eps_bar."""
    weights = [(1,), (3 / 2, -1 / 2), (23 / 12, -16 / 12, 5 / 12), (55 / 24, -59 / 24, 37 / 24, -9 / 24)]
    history = []
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True):
        eps = (x - model(x, torch.full((x.shape[0],), sigma, dtype=x.dtype))) / sigma
        history = [eps, *history][:max_order]
        x = x + (sigma_next - sigma) * sum(w * e for w, e in zip(weights[len(history) - 1], history, strict=True))
    return x


@pytest.mark.parametrize("max_order", [1, 2, 3, 4])
def test_ipndm_matches_eps_loop(max_order):
    sigmas = fastdiff.get_sigmas("karras", 9, 0.02, 20.0)
    x = start()
    ours = sampling.sample_ipndm(elementwise_mixture, x, sigmas, max_order=max_order)
    torch.testing.assert_close(ours, ipndm_loop(elementwise_mixture, x, sigmas, max_order), rtol=1e-12, atol=1e-12)


def test_euler_maruyama_matches_formula():
    """x' = x + Delta (D - x)/sigma^2 + s_noise sqrt(Delta) z with Delta = sigma^2 - sigma'^2, and x' = D on the step to 0."""
    sigmas = fastdiff.get_sigmas("karras", 7, 0.02, 20.0)
    x = start()
    noises = [torch.randn(SHAPE, generator=torch.Generator().manual_seed(i), dtype=torch.float64) for i in range(7)]
    calls = []

    def noise_sampler(sigma, sigma_next):
        calls.append(float(sigma))
        return noises[len(calls) - 1]

    ours = sampling.sample_euler_maruyama(elementwise_mixture, x, sigmas, s_noise=0.7, noise_sampler=noise_sampler)
    expected = x
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1].tolist(), sigmas[1:].tolist(), strict=True)):
        denoised = elementwise_mixture(expected, torch.full((SHAPE[0],), sigma, dtype=torch.float64))
        delta = sigma**2 - sigma_next**2
        expected = expected + delta * (denoised - expected) / sigma**2
        if sigma_next > 0:
            expected = expected + 0.7 * math.sqrt(delta) * noises[i]
    assert calls == sigmas[:-2].tolist()
    torch.testing.assert_close(ours, expected, rtol=1e-12, atol=1e-12)
