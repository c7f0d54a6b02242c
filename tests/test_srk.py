"""The SRK samplers (`srk`, `srk_dp`, `srk_score`, `exp_em`): convergence orders measured on exact output laws,
the coupling ablation, stability at NFE 8, the float64 coefficients, and their noise handling.

Orders follow diffrax's test_sde_strong_order pattern: a log-log fit of the exact KL(output || target) over nested
step counts, with an assertion on the slope. KL ~ (weak error)^2, so weak order 2 shows as a slope near -4 and
weak order 1 as -2; the order is the one the solver declares (`Solver.order`).
"""

from __future__ import annotations

import math

import pytest
import torch

import fastdiff
import fastdiff.toy
from fastdiff import sampling
from fastdiff.gaussian_law import exact_output_law, gaussian_kl
from fastdiff.solvers import make_solver
from fastdiff.srk_coefficients import (
    SERIES_RADIUS,
    data_form,
    exp_tail,
    multistep_form,
    scaled_exp_tail,
    score_form,
    stage_fraction,
)

MU1, COV1 = torch.tensor([1.5], dtype=torch.float64), torch.tensor([[0.0625]], dtype=torch.float64)


def anisotropic_target(d: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """N(mu, Q diag(lam) Q^T) with lam spread over two decades (stds 0.1 .. 1) and a fixed random rotation."""
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return torch.randn(d, generator=g, dtype=torch.float64), q @ torch.diag(torch.logspace(-2, 0, d, dtype=torch.float64)) @ q.T


MUD, COVD = anisotropic_target()


def solver_fn(name: str, **options):
    def run(model, x, sigmas, noise_sampler):
        return fastdiff.sample(model, x, sigmas, name, noise_sampler=noise_sampler, **options)

    return run


def kl(name: str, steps: int, grid: str = "karras", target=(MU1, COV1), **options) -> float:
    mean, cov = exact_output_law(solver_fn(name, **options), *target, fastdiff.get_sigmas(grid, steps, 0.002, 80.0))
    return gaussian_kl(mean, cov, *target)


def kl_slope(order: int) -> int:
    """The slope of log KL against log steps of weak order `order`."""
    return -2 * order


def declared_order(name: str, **options) -> int:
    return make_solver(name, **options).order


def slope(name: str, steps=(64, 128, 256), **options) -> float:
    """Least-squares slope of log KL against log steps."""
    xs = torch.tensor([math.log(n) for n in steps], dtype=torch.float64)
    ys = torch.tensor([math.log(kl(name, n, **options)) for n in steps], dtype=torch.float64)
    xc = xs - xs.mean()
    return float((xc * (ys - ys.mean())).sum() / (xc * xc).sum())


# ----------------------------------------------------------------------------------------------- orders
@pytest.mark.parametrize("target", [(MU1, COV1), (MUD, COVD)], ids=["1d", "8d"])
def test_srk_converges_faster_than_euler_maruyama(target):
    """Measured: srk -4.5 (1-D) and -4.7 (8-D), Euler-Maruyama -2.1 for both; margins of 0.5 and 0.4."""
    assert slope("srk", target=target) <= kl_slope(declared_order("srk"))
    assert slope("euler_maruyama", target=target) >= kl_slope(declared_order("euler_maruyama")) - 0.5


@pytest.mark.parametrize("name", ["srk", "srk_dp", "srk_score"])
def test_coupling_of_the_two_gaussians_gives_the_order(name):
    """Same variances, independent Gaussians: the order collapses. Measured slopes over 64..256 steps (coupled /
    independent): srk -4.5 / -1.2, srk_dp -3.8 / -1.8, srk_score -4.0 / -2.2; asserted within 0.5 of the declared
    weak orders 2 and 1 (<= -3.5 and >= -2.5)."""
    assert slope(name) <= kl_slope(declared_order(name)) + 0.5
    assert slope(name, coupled=False) >= kl_slope(declared_order(name, coupled=False)) - 0.5


@pytest.mark.parametrize(
    "name, options",
    [("euler_ancestral", {}), ("dpmpp_2m_sde", {}), ("dpmpp_2m_sde", {"solver_type": "heun"}), ("dpmpp_3m_sde", {}),
     ("exp_em", {}), ("euler", {"s_churn": 10.0}), ("heun", {"s_churn": 10.0})],
)
def test_weak_order_of_the_other_stochastic_solvers(name, options):
    """Measured slopes on the 1-D target (8-D in brackets): euler_ancestral -1.93 (-1.93), dpmpp_2m_sde -4.18 (-4.24),
    its 'heun' type -4.24 (-4.28), dpmpp_3m_sde -3.96 (-4.07), exp_em -2.07 (-2.08), Euler with churn -1.93 (-1.93),
    Heun with churn -4.10 (-4.15); asserted within 0.5 of the declared weak order."""
    assert abs(slope(name, **options) - kl_slope(declared_order(name, **options))) <= 0.5


def test_srk_is_stable_at_nfe_8():
    """8 steps (8 evaluations) from 80 to 0.002: measured KL 5.0e-3 (Karras) and 7.8e-4 (logsnr) on the 1-D target,
    9.2e-2 and 1.3e-2 on the 8-D one, where Euler-Maruyama has 2.1 / 1.9 and 14 / 15."""
    for grid in ("karras", "logsnr"):
        for target, bound in (((MU1, COV1), 1e-2), ((MUD, COVD), 0.15)):
            value = kl("srk", 8, grid, target)
            assert math.isfinite(value) and value < bound
            assert value < kl("euler_maruyama", 8, grid, target) / 100


def test_score_form_diverges_at_nfe_8_and_data_form_does_not():
    """docs/ALGORITHMS.md section 11, finding (1) and (2): 4 two-evaluation steps on the Karras grid."""
    assert kl("srk_score", 4) > 100.0
    assert kl("srk_dp", 4) < 0.02


# ----------------------------------------------------------------------------------------------- structure
def test_theta_zero_and_large_steps_are_dpmpp_2m_sde():
    """theta = 0, or every step at h >= 1.5 (where the stage falls back to the step start), is DPM-Solver++(2M) SDE."""
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 80.0
    model = fastdiff.toy.GaussianMixture([[0.0, 1.0, 0.0], [1.0, -1.0, 0.5]], stds=[0.3, 0.5]).denoiser
    grid = fastdiff.get_sigmas("karras", 10, 0.002, 80.0)
    reference = fastdiff.sample(model, x, grid, "dpmpp_2m_sde", seed=5)
    torch.testing.assert_close(fastdiff.sample(model, x, grid, "srk", seed=5, theta=0.0), reference, rtol=1e-12, atol=1e-12)
    coarse = fastdiff.get_sigmas("logsnr", 5, 0.002, 80.0)  # h = 2.65 per step
    torch.testing.assert_close(fastdiff.sample(model, x, coarse, "srk", seed=5),
                               fastdiff.sample(model, x, coarse, "dpmpp_2m_sde", seed=5), rtol=1e-12, atol=1e-12)
    assert not torch.allclose(fastdiff.sample(model, x, grid, "srk", seed=5), reference)


@pytest.mark.parametrize("name, per_step", [("srk", lambda n: n), ("exp_em", lambda n: n), ("srk_dp", lambda n: 2 * n - 1),
                                            ("srk_score", lambda n: 2 * n - 1)])
def test_evaluations_per_run(name, per_step):
    calls = []

    def model(x, sigma):
        calls.append(1)
        return torch.zeros_like(x)

    steps = 7
    fastdiff.sample(model, torch.randn(2, 3), fastdiff.get_sigmas("karras", steps, 0.01, 10.0), name, seed=0)
    assert len(calls) == per_step(steps)


@pytest.mark.parametrize("name", ["srk", "srk_dp", "srk_score", "exp_em"])
def test_seeds_and_batch_invariance(name):
    model = fastdiff.toy.GaussianMixture([[0.0, 1.0], [1.0, -1.0]], stds=[0.3, 0.5]).denoiser
    grid = fastdiff.get_sigmas("karras", 6, 0.01, 20.0)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(1)) * 20.0
    seeds = [11, 12, 13, 14, 15]
    first = fastdiff.sample(model, x, grid, name, seed=seeds)
    assert torch.equal(first, fastdiff.sample(model, x, grid, name, seed=seeds))
    assert not torch.equal(first, fastdiff.sample(model, x, grid, name, seed=[1, 2, 3, 4, 5]))
    alone = fastdiff.sample(model, x[2:3], grid, name, seed=seeds[2:3])
    torch.testing.assert_close(alone, first[2:3], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["srk", "srk_dp", "srk_score"])
def test_noise_sampler_gets_disjoint_intervals(name):
    """A Brownian-tree sampler returns the same noise for the same interval. SRK asks for the two parts
    (sigma, sigma~) and (sigma~, sigma') of a step at its stage point sigma~ (srk: the whole step where its stage sits
    at the step start), so its two Gaussians differ; no interval is asked for twice (each Gaussian is drawn once)."""
    requests: list[tuple[float, float]] = []
    gen = torch.Generator().manual_seed(0)

    def tree_like(sigma, sigma_next):
        key = (float(sigma), float(sigma_next))
        assert key not in requests, f"interval {key} requested twice"
        requests.append(key)
        return torch.randn(3, 2, generator=gen, dtype=torch.float64)

    grid = fastdiff.get_sigmas("karras", 6, 0.01, 20.0)
    out = fastdiff.sample(lambda x, s: 0.5 * x / (1 + s[:, None] ** 2), torch.randn(3, 2, dtype=torch.float64) * 20.0,
                          grid, name, noise_sampler=tree_like)
    assert bool(torch.isfinite(out).all())
    levels = grid.tolist()
    for hi, lo in zip(levels[:-2], levels[1:-1], strict=True):
        inside = sorted((k for k in requests if lo <= k[1] < k[0] <= hi), reverse=True)
        assert len(inside) in (1, 2) and inside[0][0] == hi and inside[-1][1] == lo
        if len(inside) == 2:
            assert inside[0][1] == inside[1][0] and lo < inside[0][1] < hi
        if name != "srk":
            assert len(inside) == 2
    assert len(requests) == sum(1 for k in requests if k[1] > 0)


def test_option_errors_name_the_option():
    with pytest.raises(ValueError, match="theta"):
        fastdiff.sample(lambda x, s: x, torch.zeros(1, 1), [1.0, 0.0], "srk", theta=0.7)
    with pytest.raises(TypeError, match="coupled"):
        fastdiff.sample(lambda x, s: x, torch.zeros(1, 1), [1.0, 0.0], "srk_dp", coupled=1)
    with pytest.raises(ValueError, match="h must be"):
        data_form(0.0)


def test_sampler_functions_match_the_driver():
    model = fastdiff.toy.GaussianMixture([[0.0], [2.0]], stds=[0.3, 0.5]).denoiser
    grid = fastdiff.get_sigmas("logsnr", 5, 0.01, 20.0)
    x = torch.randn(4, 1) * 20.0
    for fn, name in ((sampling.sample_srk, "srk"), (sampling.sample_srk_dp, "srk_dp"),
                     (sampling.sample_srk_score, "srk_score"), (sampling.sample_exp_em, "exp_em")):
        assert torch.equal(fn(model, x, grid, seed=3, disable=True), fastdiff.sample(model, x, grid, name, seed=3))


# ----------------------------------------------------------------------------------------------- coefficients
@pytest.fixture
def mpmath():
    return pytest.importorskip("mpmath")


def tail_mp(mpmath, n: int, x: float):
    x = mpmath.mpf(x)
    return mpmath.exp(x) - sum(x**k / mpmath.factorial(k) for k in range(n))


def test_exp_tail_against_mpmath_on_both_sides_of_the_switch(mpmath):
    mpmath.mp.dps = 50
    points = [s * v for v in (1e-9, 1e-4, 0.3, 1.0, SERIES_RADIUS * (1 - 1e-12), SERIES_RADIUS, 3.0, 12.0) for s in (1, -1)]
    for n in range(5):
        for x in points:
            assert exp_tail(n, x) == pytest.approx(float(tail_mp(mpmath, n, x)), rel=4e-15)
    for x in (1e-6, 0.5, SERIES_RADIUS, 40.0, 700.0):
        assert scaled_exp_tail(3, x) == pytest.approx(float(mpmath.exp(-x) * tail_mp(mpmath, 3, x)), rel=4e-15)


def test_score_form_against_high_precision_closed_forms(mpmath):
    mpmath.mp.dps = 60
    for h in (1e-7, 1e-3, 0.05, 0.7, 3.0):
        H = mpmath.mpf(h)
        phi1 = mpmath.exp(H) - 1 - H
        V2 = mpmath.exp(2 * H) - 1 - 4 * (mpmath.exp(H) - 1) + 2 * H
        c = 2 * phi1**2 / (H * V2)
        k = score_form(h)
        assert k.c == pytest.approx(float(c), rel=1e-13)
        assert k.w1 == pytest.approx(float(phi1 / (c * H)), rel=1e-13)
        assert k.w0 == pytest.approx(float(mpmath.exp(H) - 1 - phi1 / (c * H)), rel=1e-12)
        assert k.noise.V2 == pytest.approx(float(V2), rel=1e-13)
        assert k.noise.C12 == pytest.approx(float((mpmath.exp(H) - 1) ** 2), rel=1e-13)


@pytest.mark.parametrize("h", [1e-4, 0.05, 0.7, 3.0])
def test_data_form_against_high_precision_integrals(mpmath, h):
    """Section 11's integrals evaluated by mpmath quadrature (units sigma' = 1, so sigma_s = e^h)."""
    mpmath.mp.dps = 40
    H = mpmath.mpf(h)
    s2 = mpmath.exp(2 * H)
    Phi0 = 1 - mpmath.exp(-2 * H)
    Phi1 = 2 * mpmath.quad(lambda u: mpmath.exp(-2 * (H - u)) * u, [0, H])
    Psi = mpmath.quad(lambda u: mpmath.exp(-2 * (H - u)) * s2 * (mpmath.exp(-2 * u) - mpmath.exp(-4 * u)), [0, H])
    V2 = 8 * s2 * mpmath.exp(-4 * H) * mpmath.quad(lambda w: mpmath.exp(2 * w) * (H - w) ** 2, [0, H])
    C12 = 4 * s2 * mpmath.exp(-4 * H) * mpmath.quad(lambda w: mpmath.exp(2 * w) * (H - w), [0, H])
    B = 2 * Psi / V2
    k = data_form(h)
    assert k.B == pytest.approx(float(B), rel=1e-12)
    assert k.c == pytest.approx(float(Phi1 * B / H), rel=1e-12)
    assert k.w0 == pytest.approx(float(Phi0 / 2 - 1 / (2 * B)), rel=1e-12)
    assert (k.noise.V1, k.noise.V2, k.noise.C12) == pytest.approx((float(Phi0), float(V2), float(C12)), rel=1e-12)


@pytest.mark.parametrize("form, w1_over_h, bh", [(score_form, 2 / 3, 3 / 2), (data_form, 2 / 3, 3 / 4)])
def test_small_step_limits(form, w1_over_h, bh):
    """c -> 3/4 in both forms; the weights become (1/3, 2/3) of the step; B h -> 3/2 (score) and 3/4 (data)."""
    k = form(1e-9)
    assert k.c == pytest.approx(0.75, rel=1e-8)
    assert k.w1 / k.h == pytest.approx(w1_over_h, rel=1e-8)
    assert k.w0 / k.h == pytest.approx(1 / 3, rel=1e-8)
    assert k.B * k.h == pytest.approx(bh, rel=1e-8)


@pytest.mark.parametrize("form", [score_form, data_form])
def test_noise_pair_is_a_valid_covariance_and_scales_reproduce_it(form):
    for h in (1e-8, 1e-5, 1e-2, 0.3, 1.0, 2.5, 8.0):
        p = form(h).noise
        assert p.V1 * p.V2 > p.C12**2
        s1, s2 = p.update_scales()
        assert s1 * s1 + s2 * s2 == pytest.approx(p.V1, rel=1e-12)
        assert s2 * p.stage_scale == pytest.approx(p.C12, rel=1e-12)
        assert p.update_scales(coupled=False) == (math.sqrt(p.V1), 0.0)


def test_multistep_noise_split_adds_up_to_the_step_noise():
    """Var(e^{-2(1-theta)h} N + R) = sigma'^2 (1 - e^{-2h}) with N ~ sigma^2 stage_var, R ~ sigma'^2 rest_var."""
    for h in (1e-6, 0.1, 0.9, 1.4):
        theta = stage_fraction(h, 0.085)
        k = multistep_form(h, theta)
        total = math.exp(-4.0 * (1.0 - theta) * h) * math.exp(2.0 * h) * k.stage_var + k.rest_var
        assert total == pytest.approx(k.phi0, rel=1e-12)
    assert stage_fraction(1.5, 0.085) == 0.0 and stage_fraction(0.0, 0.085) == 0.085


@pytest.mark.parametrize("coupled", [True, False])
def test_counter_noise_path_equals_noise_sampler_path(coupled):
    """With counter noise the update regenerates z1 in the kernel instead of reading x~; fed the same
    Gaussians through a noise_sampler (which takes the x~ path), the sample is the same to rounding."""
    grid = fastdiff.get_sigmas("karras", 12, 0.002, 80.0)
    seeds = [3, 2**63 + 9]
    x = torch.randn(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 80.0
    model = fastdiff.toy.GaussianMixture.gaussian(MUD[:5], COVD[:5, :5]).denoiser
    source = fastdiff.ops.philox.CounterNoise(seeds, x.device)
    points = grid.tolist()

    def replay(sigma, sigma_next):
        """The counter Gaussians of the (step, stage) that SRK asks for with this interval."""
        s = float(sigma)
        if s in points:
            return source.draw(x, points.index(s), 0)
        step = min(range(len(points) - 1), key=lambda i: abs(math.sqrt(points[i] * points[i + 1]) - s))
        return source.draw(x, step, 1)

    fused = fastdiff.sample(model, x, grid, "srk", seed=seeds, coupled=coupled)
    through_sampler = fastdiff.sample(model, x, grid, "srk", noise_sampler=replay, coupled=coupled)
    torch.testing.assert_close(fused, through_sampler, rtol=1e-12, atol=1e-12)
