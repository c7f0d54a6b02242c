"""The Brownian tree (`fastdiff.brownian_tree`, `fastdiff.ops.brownian`): its weights against the bridge-descent oracle
on every backend, its law (exact for points in distinct leaves) from the weights and by Monte Carlo from the kernels,
the path kept under refinement, per-sample batch invariance, and the entry points."""

from __future__ import annotations

import math

import pytest
import torch
from backend_params import backend_params
from kdiffusion_loader import load_kdiffusion_sampling

import fastdiff
from fastdiff.brownian_tree import DEFAULT_DEPTH, increment_weights, leaf_position, tree_time
from fastdiff.noise import sample_seeds, seeds_to_keys
from fastdiff.ops.brownian import BrownianNoise, BrownianTreeNoiseSampler
from fastdiff.ops.solver_step import NoiseDraw, solver_step
from fastdiff.reference.brownian import brownian_path
from fastdiff.solvers import make_solver
from fastdiff.toy import GaussianMixture

parametrize_backends = pytest.mark.parametrize(("backend", "device"), backend_params())
STOCHASTIC = [name for name in fastdiff.SOLVERS if make_solver(name).stochastic]
SEEDS = [2**64 - 1, 0, 12345]


def increment_variance(u_lo: float, u_hi: float, depth: int) -> float:
    """Var(W(u_hi) - W(u_lo)) of the tree path: Brownian (u_hi - u_lo) across leaves; inside one leaf of length l the
    linear part (f_hi - f_lo)^2 l plus the two independent bridge values f (1 - f) l."""
    (j_lo, f_lo), (j_hi, f_hi) = leaf_position(u_lo, depth), leaf_position(u_hi, depth)
    if j_lo != j_hi:
        return u_hi - u_lo
    leaf = math.ldexp(1.0, -depth)
    return ((f_hi - f_lo) ** 2 + f_lo * (1 - f_lo) + f_hi * (1 - f_hi)) * leaf


def covariance(a: list, b: list) -> float:
    weights = dict(a)
    return math.fsum(w * weights.get(g, 0.0) for g, w in b)


def random_intervals(g: torch.Generator, count: int) -> list[tuple[float, float]]:
    """Interval ends in sigma: random levels over 1e-4 .. 1e3, plus inf, tiny and adjacent pairs."""
    levels = (10 ** (torch.rand(2 * count, generator=g, dtype=torch.float64) * 7 - 4)).tolist()
    pairs = [(max(a, b), min(a, b)) for a, b in zip(levels[::2], levels[1::2], strict=True)]
    return [*pairs, (math.inf, 80.0), (math.inf, 0.5), (0.003, 0.002), (1.0, 0.99999), (1e-4, 0.0)]


@parametrize_backends
@pytest.mark.parametrize("depth", [1, 6, DEFAULT_DEPTH, 30])
def test_draws_match_the_bridge_descent(backend, device, depth):
    """z sd = W(u_hi) - W(u_lo), W by the oracle's bridge descent, for fresh intervals, odd sizes, every backend (the
    Triton interpreter on three intervals at one depth: it runs each of an increment's ~2 depth draws in Python)."""
    if backend == "triton" and depth != 6:
        pytest.skip("the Triton interpreter runs every draw in Python: depth 6 only")
    g = torch.Generator().manual_seed(depth)
    keys = seeds_to_keys(SEEDS, torch.device(device))
    like = torch.empty(3, 5, 7, dtype=torch.float64, device=device)
    source = BrownianNoise(keys, backend, depth)
    intervals = random_intervals(g, 6)
    for sigma, sigma_next in intervals[4:7] if backend == "triton" else intervals:
        z = source.draw(like, 0, 0, sigma, sigma_next).cpu().reshape(3, -1)
        u_lo, u_hi = sorted((tree_time(sigma), tree_time(sigma_next)))
        increment = brownian_path(keys.cpu(), 35, u_hi, depth) - brownian_path(keys.cpu(), 35, u_lo, depth)
        sd = math.sqrt(increment_variance(u_lo, u_hi, depth))
        torch.testing.assert_close(z * sd, increment, rtol=0, atol=1e-13 * (1 + float(increment.abs().max())))


@parametrize_backends
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_low_precision_draws_follow_float64(backend, device, dtype):
    keys = seeds_to_keys(SEEDS, torch.device(device))
    x = torch.randn(3, 2, 33, generator=torch.Generator().manual_seed(2)).to(device, dtype)
    source = BrownianNoise(keys, backend, depth=8)
    out = solver_step(x, [], 0.5, [], noise=[(0.7, NoiseDraw(source, 0, 0, 5.0, 3.0))], backend=backend)
    exact = 0.5 * x.double() + 0.7 * source.draw(x.double(), 0, 0, 5.0, 3.0)
    tol = {torch.float32: 2e-5, torch.bfloat16: 2e-2}[dtype]
    torch.testing.assert_close(out.double(), exact, rtol=tol, atol=tol * 4)


def test_weights_give_the_brownian_covariances():
    """Across distinct leaves the normalized increments have Brownian covariances exactly: |A n B| / sqrt(|A| |B|) for
    nested, overlapping and disjoint intervals (disjoint: independent), each of variance 1."""
    g = torch.Generator().manual_seed(3)
    sigmas = sorted((10 ** (torch.rand(12, generator=g, dtype=torch.float64) * 6 - 3)).tolist())
    us = [tree_time(s) for s in sigmas]
    assert len({leaf_position(u, DEFAULT_DEPTH)[0] for u in us}) == len(us)
    pairs = [(i, j) for i in range(len(us)) for j in range(i + 1, len(us))]
    weights = {p: increment_weights(sigmas[p[1]], sigmas[p[0]]) for p in pairs}
    for a in pairs[::3]:
        for b in pairs[::5]:
            overlap = max(0.0, min(us[a[1]], us[b[1]]) - max(us[a[0]], us[b[0]]))
            expected = overlap / math.sqrt((us[a[1]] - us[a[0]]) * (us[b[1]] - us[b[0]]))
            assert covariance(weights[a], weights[b]) == pytest.approx(expected, abs=1e-12)


def test_kernel_draws_have_the_law_the_weights_say():
    """Monte Carlo over 2^18 elements (each element its own path) from the compiled kernel: variances 1, the covariance
    of overlapping increments, zero for disjoint ones; within 5 standard errors."""
    n = 1 << 18
    like = torch.empty(1, n, dtype=torch.float64)
    source = BrownianNoise(seeds_to_keys([7], like.device))
    a = source.draw(like, 0, 0, 10.0, 1.0)[0]
    b = source.draw(like, 0, 0, 3.0, 0.1)[0]
    c = source.draw(like, 0, 0, 0.1, 0.01)[0]
    expected_ab = covariance(increment_weights(10.0, 1.0), increment_weights(3.0, 0.1))
    se = 5 / math.sqrt(n)
    for z in (a, b, c):
        assert abs(float(z.mean())) < se and abs(float(z.var()) - 1) < 5 * math.sqrt(2 / n)
    assert abs(float((a * b).mean()) - expected_ab) < 2 * se and abs(float((a * c).mean())) < se


@parametrize_backends
def test_refining_the_grid_keeps_the_path(backend, device):
    """sd(A) z_A = sum_i sd(A_i) z_{A_i} over any split of A: the fine steps' noise adds up to the coarse step's."""
    keys = seeds_to_keys(SEEDS, torch.device(device))
    like = torch.empty(3, 41, dtype=torch.float64, device=device)
    source = BrownianNoise(keys, backend, depth=8 if backend == "triton" else DEFAULT_DEPTH)
    fine = [80.0, 7.5, 0.4, 0.002] if backend == "triton" else [80.0, 31.0, 7.5, 2.0, 0.4, 0.05, 0.002]

    def scaled(hi, lo):
        return math.sqrt(tree_time(hi) - tree_time(lo)) * source.draw(like, 0, 0, hi, lo)

    coarse = scaled(fine[0], fine[-1])
    torch.testing.assert_close(sum(scaled(hi, lo) for hi, lo in zip(fine[:-1], fine[1:], strict=True)), coarse, rtol=0,
                               atol=1e-12)


@pytest.mark.parametrize("steps", [64, 256])
@pytest.mark.parametrize("grid", ["karras", "logsnr"])
def test_srk_draws_are_exactly_independent(steps, grid):
    """SRK's weak order 2 (tests/test_srk.py) is proved for independent unit Gaussians; on the order tests' grids every
    draw it asks of the tree is one, exactly (Gram matrix of the draws' weights = I), so the order is kept."""
    requests = []

    def recorder(sigma, sigma_next):
        requests.append((float(sigma), float(sigma_next)))
        return torch.zeros(1, 1, dtype=torch.float64)

    sigmas = fastdiff.get_sigmas(grid, steps, 0.002, 80.0)
    fastdiff.sample(lambda x, s: x * 0, torch.zeros(1, 1, dtype=torch.float64), sigmas, "srk", noise_sampler=recorder)
    weights = [increment_weights(*r) for r in requests]
    assert len(weights) == 2 * steps - 3  # the first step has one draw, the last none
    gram = torch.tensor([[covariance(a, b) for b in weights] for a in weights], dtype=torch.float64)
    torch.testing.assert_close(gram, torch.eye(len(weights), dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_no_solver_asks_twice_for_one_interval(name):
    """Two draws over one interval are the same Gaussians on the tree: every stochastic solver's draws of a run cover
    distinct intervals."""
    requests = []

    def recorder(sigma, sigma_next):
        requests.append((float(sigma), float(sigma_next)))
        return torch.zeros(1, 2, dtype=torch.float64)

    grid = fastdiff.get_sigmas("karras", 7, 0.002, 80.0)
    fastdiff.sample(lambda x, s: 0 * x, torch.zeros(1, 2, dtype=torch.float64), grid, name, noise_sampler=recorder)
    assert requests and len(set(requests)) == len(requests)


@pytest.mark.parametrize("name", STOCHASTIC)
def test_every_stochastic_solver_runs_on_brownian_noise(name):
    """noise='brownian' (fused) equals the same paths given as a BrownianTreeNoiseSampler (drawn by the sampler, read
    as tensors); a sample alone equals the sample in its batch; the default counter noise differs."""
    gm = GaussianMixture.ring(5)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    grid = fastdiff.get_sigmas("karras", 9, 0.002, 80.0)
    fused = fastdiff.sample(gm.denoiser, x * 80.0, grid, name, seed=5, noise="brownian")
    tree = BrownianTreeNoiseSampler(x, 0.002, 80.0, seed=5)
    drawn = fastdiff.sample(gm.denoiser, x * 80.0, grid, name, noise_sampler=lambda s, t: tree(s, t))
    torch.testing.assert_close(fused, drawn, rtol=1e-10, atol=1e-10)
    alone = fastdiff.sample(gm.denoiser, x[4:5] * 80.0, grid, name, seed=sample_seeds(5, 6)[4:5], noise="brownian")
    torch.testing.assert_close(alone, fused[4:5], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(fused, fastdiff.sample(gm.denoiser, x * 80.0, grid, name, seed=5))


def test_step_count_changes_the_sample_gradually():
    """Same seed at 20 and 40 steps: with the tree the samples stay close, with counter noise they are unrelated."""
    gm = GaussianMixture.ring(5)
    x = torch.randn(256, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)

    def gap(noise):
        a, b = (fastdiff.sample(gm.denoiser, x * 80.0, fastdiff.get_sigmas("karras", n, 0.002, 80.0), "dpmpp_2m_sde",
                                seed=9, noise=noise) for n in (20, 40))
        return float((a - b).norm(dim=1).mean())

    assert gap("brownian") < 0.3 * gap("counter")


def test_kdiffusion_samplers_take_the_tree_as_noise_sampler():
    """k-diffusion's own dpmpp_2m_sde with our tree equals fastdiff's with noise='brownian'."""
    gm = GaussianMixture.ring(5)
    x = torch.randn(4, 2, generator=torch.Generator().manual_seed(6), dtype=torch.float64) * 80.0
    grid = fastdiff.get_sigmas("karras", 8, 0.002, 80.0)
    tree = BrownianTreeNoiseSampler(x, 0.002, 80.0, seed=3)
    theirs = load_kdiffusion_sampling().sample_dpmpp_2m_sde(gm.denoiser, x, grid, noise_sampler=tree, disable=True)
    ours = fastdiff.sample(gm.denoiser, x, grid, "dpmpp_2m_sde", seed=3, noise="brownian")
    torch.testing.assert_close(theirs, ours, rtol=1e-10, atol=1e-10)


def test_bad_input_is_refused_by_name():
    x = torch.zeros(2, 3)
    grid = [10.0, 1.0, 0.0]
    with pytest.raises(ValueError, match="noise must be one of"):
        fastdiff.sample(lambda x, s: x, x, grid, "srk", noise="tree")
    with pytest.raises(ValueError, match="noise must be one of"):
        fastdiff.sample(lambda x, s: x, x, grid, "euler", noise="tree")
    with pytest.raises(ValueError, match="either noise='brownian' or a noise_sampler"):
        fastdiff.sample(lambda x, s: x, x, grid, "srk", noise="brownian", noise_sampler=lambda s, t: torch.zeros(2, 3))
    with pytest.raises(ValueError, match="depth must be at most 30"):
        BrownianNoise(seeds_to_keys([1, 2], x.device), depth=31)
    with pytest.raises(ValueError, match="transform must be None"):
        BrownianTreeNoiseSampler(x, 0.1, 10.0, transform=lambda t: t)
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        BrownianTreeNoiseSampler(x, 10.0, 0.1)
    tree = BrownianTreeNoiseSampler(x, 0.1, 10.0, seed=1)
    with pytest.raises(ValueError, match="outside the tree"):
        tree(torch.tensor(20.0), torch.tensor(5.0))
    with pytest.raises(ValueError, match="outside the tree"):
        fastdiff.sample(lambda x, s: x, x, [20.0, 1.0, 0.0], "srk", noise_sampler=tree)
    with pytest.raises(ValueError, match="positive length"):
        tree(1.0, 1.0)


def test_kdiffusion_functions_take_noise_brownian():
    """fastdiff.sampling's functions pass noise= through; its BrownianTreeNoiseSampler is the same path, fused."""
    gm = GaussianMixture.ring(5)
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64) * 80.0
    grid = fastdiff.get_sigmas("karras", 6, 0.002, 80.0)
    expected = fastdiff.sample(gm.denoiser, x, grid, "srk", seed=2, noise="brownian")
    torch.testing.assert_close(fastdiff.sampling.sample_srk(gm.denoiser, x, grid, seed=2, noise="brownian", disable=True),
                               expected, rtol=0, atol=0)
    tree = fastdiff.sampling.BrownianTreeNoiseSampler(x, 0.002, 80.0, seed=2)
    torch.testing.assert_close(fastdiff.sampling.sample_srk(gm.denoiser, x, grid, noise_sampler=tree, disable=True),
                               expected, rtol=0, atol=0)
