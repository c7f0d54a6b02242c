"""Smoke test of bench/peer_shootout.py: one tiny target, two NFEs, two fastdiff samplers and two peers. The NFE
counter counts what each sampler was asked for, and the harness's errors equal values computed independently: the
exact-law KL of fastdiff's euler_ancestral by `exact_output_law` run directly on `fastdiff.sampling`, and euler's ODE
error on a 1-D Gaussian in closed form."""

from __future__ import annotations

import math
import pathlib
import sys

import pytest
import torch

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import peer_shootout as ps  # noqa: E402
import shootout_peers  # noqa: E402

from fastdiff.gaussian_law import exact_output_law, gaussian_kl  # noqa: E402
from fastdiff.grids import get_sigmas  # noqa: E402
from fastdiff.sampling import sample_euler_ancestral  # noqa: E402

NFES = (4, 8)
SDE = "diffusers DPM++ 2M SDE"


def peers():
    """(ComfyUI's modules, diffusers' DPM++ 2M SDE sampler); skips without them."""
    pytest.importorskip("diffusers", reason="diffusers not installed (make install-test)")
    comfy, reason = shootout_peers.comfyui()
    if comfy is None:
        pytest.skip(reason)
    return comfy, shootout_peers.diffusers_sampler(SDE, *shootout_peers.diffusers_specs()[SDE])


@pytest.fixture(scope="module")
def results():
    comfy, sde = peers()
    samplers = [ps.fastdiff_sampler("euler"), ps.fastdiff_sampler("euler_ancestral"),
                shootout_peers.comfy_sampler(comfy, "euler"), sde]
    out, floors = ps.shootout(["gauss_1d"], ["karras"], NFES, samplers, samples=64, ode_points=16, log=lambda *a: None)
    assert floors == {}  # an exact-law target has no Monte Carlo floor
    return {(r.sampler, r.nfe_asked): r for r in out}


def test_every_run_counts_the_nfe_it_was_asked(results):
    assert len(results) == 4 * len(NFES)
    for (label, nfe), r in results.items():
        assert r.error is not None and r.error > 0, (label, nfe, r.note)
        assert r.nfe == nfe, (label, nfe, r.nfe)  # one evaluation per step for all four


def test_kinds_follow_the_samplers_noise(results):
    kinds = {label: r.kind for (label, _), r in results.items()}
    assert kinds == {"euler": "ode", "comfy euler": "ode", "euler_ancestral": "sde", SDE: "sde"}


def test_exact_law_kl_matches_a_direct_computation(results):
    target = ps.gauss_1d()
    mean, cov = target.mean, target.covs[0]
    sigmas = get_sigmas("karras", 8, ps.SIGMA_MIN, ps.SIGMA_MAX)
    m, S = exact_output_law(sample_euler_ancestral, mean, cov, sigmas, check_tol=1e-8)
    expected = gaussian_kl(m, S, mean, cov)
    assert results["euler_ancestral", 8].error == pytest.approx(expected, rel=1e-8)
    assert results["euler_ancestral", 4].error != pytest.approx(expected, rel=1e-3)


def test_ode_error_matches_the_closed_form(results):
    """Euler on N(mu, lam): x_{i+1} - mu = (x_i - mu)(1 + (s_{i+1} - s_i) s_i / (lam + s_i^2));
    the exact map: x - mu scaled by sqrt(lam / (lam + s_0^2))."""
    target = ps.gauss_1d()
    lam, mu = float(target.covs[0, 0, 0]), float(target.mean[0])
    starts = ps.Problem(target, "karras").start(16, torch.Generator().manual_seed(ps.SEED_ODE))
    rms = float((starts[:, 0] - mu).pow(2).mean().sqrt())
    for nfe in NFES:
        s = get_sigmas("karras", nfe, ps.SIGMA_MIN, ps.SIGMA_MAX).tolist()
        gain = math.prod(1 + (b - a) * a / (lam + a * a) for a, b in zip(s[:-1], s[1:], strict=True))
        exact = math.sqrt(lam / (lam + s[0] ** 2))
        expected = abs(gain - exact) * rms
        assert results["euler", nfe].error == pytest.approx(expected, rel=1e-9)
        assert results["comfy euler", nfe].error == pytest.approx(expected, rel=1e-6)  # the same method in ComfyUI


def test_comparison_picks_the_best_of_each_side(results):
    rows = [r for (label, _), r in results.items() if r.kind == "sde"]
    cmp = ps.comparison(rows, NFES, None)
    for nfe in NFES:
        f, p = results["euler_ancestral", nfe].error, results[SDE, nfe].error
        ratio, who = cmp[nfe]
        assert ratio == pytest.approx(f / p)
        assert who == ("fastdiff euler_ancestral" if f <= p else SDE)


@pytest.fixture(scope="module")
def flow_results():
    comfy, sde = peers()
    samplers = [ps.fastdiff_flow_time_sampler("lms", "lms", {}), shootout_peers.comfy_sampler(comfy, "lms"),
                ps.fastdiff_dpm_fast(), shootout_peers.comfy_sampler(comfy, "dpm_fast"),
                ps.fastdiff_sampler("dpmpp_2m_sde"), sde]
    out, _ = ps.shootout(["gauss_1d_flow"], [], (8,), samplers, samples=64, ode_points=16, log=lambda *a: None)
    return {(r.sampler, r.grid): r for r in out}


def test_flow_targets_run_on_three_grid_families_and_diffusers_on_its_own(flow_results):
    grids = {}
    for label, grid in flow_results:
        grids.setdefault(label, set()).add(grid)
    assert grids.pop(SDE) == {"diffusers"}
    assert all(g == set(ps.FLOW_GRIDS) for g in grids.values()), grids


def test_flow_time_rows_and_dpm_fast_equal_comfyui_on_every_flow_grid(flow_results):
    """In ComfyUI's coordinates fastdiff's lms is ComfyUI's, and fastdiff's dpm_fast takes the same grid ends."""
    for grid in ps.FLOW_GRIDS:
        for ours, theirs in (("lms (t)", "comfy lms"), ("dpm_fast", "comfy dpm_fast")):
            a, b = flow_results[(ours, grid)], flow_results[(theirs, grid)]
            assert a.nfe == b.nfe and a.error == pytest.approx(b.error, rel=1e-8), (grid, ours, a.error, b.error)


def test_fastdiff_on_diffusers_flow_grid_is_diffusers(flow_results):
    ours, theirs = flow_results[("dpmpp_2m_sde", "diffusers")], flow_results[(SDE, "diffusers")]
    assert ours.nfe == theirs.nfe and ours.error == pytest.approx(theirs.error, rel=1e-6)


def _result(library, sampler, error, stderr):
    return ps.Result("t", "held-out", "g", "sde", library, sampler, 8, 8, "m", error, stderr=stderr)


def test_monte_carlo_means_within_their_noise_tie():
    """Two means 1e-3 apart tie when the standard error of their difference is above 5e-4, and not below it."""
    noisy = [_result("fastdiff", "a", 5e-3, 4e-4), _result("peer", "b", 4e-3, 4e-4)]
    assert ps.comparison(noisy, (8,), None)[8][1] == "tie (MC noise)"
    sharp = [_result("fastdiff", "a", 5e-3, 3e-4), _result("peer", "b", 4e-3, 3e-4)]
    assert ps.comparison(sharp, (8,), None)[8] == (pytest.approx(1.25), "b")


def test_mixture_cells_are_means_over_independent_runs():
    samplers = [ps.fastdiff_sampler("euler"), ps.fastdiff_sampler("euler_ancestral")]
    out, floors = ps.shootout(["mix_2d"], ["karras"], (4,), samplers, samples=64, ode_points=8, repeats=3,
                              log=lambda *a: None)
    by = {r.sampler: r for r in out}
    assert by["euler"].stderr is None  # an ODE cell is exact
    sde = by["euler_ancestral"]
    assert sde.stderr is not None and sde.stderr > 0 and "mean of 3 runs" in sde.metric
    tr = ps.TargetRun("mix_2d", "karras", 64, 8, repeats=3)
    assert not torch.equal(tr.mc_x[0], tr.mc_x[1]) and not torch.equal(tr.exact[0], tr.exact[2])


def test_comfyui_snr_offset_is_all_that_separates_its_log_snr_sde_samplers():
    """ComfyUI's dpmpp_3m_sde and sa_solver start a flow model at t = percent_to_sigma(1e-4) (offset_first_sigma_for_snr):
    fastdiff's solvers given that first level equal them; from t = 1 they differ."""
    comfy, _ = peers()
    s = ps.FLOW_SHIFT * (1 - 1e-4)
    t0 = s / (1 + s - (1 - 1e-4))  # the shift-3 flow time of 1 - 1e-4
    runner = ps.Runner()
    pairs = ((ps.fastdiff_sampler("dpmpp_3m_sde"), shootout_peers.comfy_sampler(comfy, "dpmpp_3m_sde")),
             (ps.fastdiff_sa_solver_model_window("sa_solver"), shootout_peers.comfy_sampler(comfy, "sa_solver")))
    for grid in ("flow", "logsnr"):
        tr = ps.TargetRun("gauss_1d_flow", grid, 64, 8)
        theirs = {c.label: tr.measure(runner, c, True, 4)[0] for _, c in pairs}
        from_one = {c.label: tr.measure(runner, f, True, 4)[0] for f, c in pairs}
        plain = tr.problem.grid

        def offset(steps, plain=plain):
            g = plain(steps).clone()
            g[0] = t0 / (1 - t0)
            return g

        tr.problem.grid = offset
        for ours, peer in pairs:
            assert tr.measure(runner, ours, True, 4)[0] == pytest.approx(theirs[peer.label], rel=1e-6), (grid, peer.label)
            assert from_one[peer.label] != pytest.approx(theirs[peer.label], rel=1e-3), (grid, peer.label)
