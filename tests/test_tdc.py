"""TDC (docs/ALGORITHMS.md section 9): networks, noise-level groups and budgets, structured pruning, FLOPs counting,
the width search and GroupedDenoiser routing."""

import math

import pytest
import torch

from fastdiff.models import GroupedDenoiser
from fastdiff.toy import GaussianMixture
from fastdiff.train.networks import EDMPrecond, MLPNet, UNetNet, make_denoiser
from fastdiff.train.tdc.difficulty import EmpiricalDenoiser, group_losses
from fastdiff.train.tdc.flops import config_flops, denoiser_flops, sampling_flops
from fastdiff.train.tdc.groups import budgets_by_group, flops_budgets, group_index, snr_db, snr_group_edges
from fastdiff.train.tdc.noise_levels import restrict_lognormal, truncated_lognormal
from fastdiff.train.tdc.prune import prunable_widths, prune, pruned_config, unit_importance
from fastdiff.train.tdc.search import WidthSearch

F64 = torch.float64


def seeded(kind, seed=0, **config):
    torch.manual_seed(seed)
    return make_denoiser(kind, **config)


# ---------------------------------------------------------------- networks
def test_edm_precond_coefficients_match_edm_table():
    d = seeded("mlp", dim=3, widths=(16, 8), emb_dim=8, sigma_data=0.7).double()
    x = torch.randn(5, 3, dtype=F64)
    sigma = torch.tensor([0.01, 0.3, 0.7, 2.0, 50.0], dtype=F64)
    sd = 0.7
    c_skip = sd**2 / (sigma**2 + sd**2)
    c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
    c_in = 1 / (sigma**2 + sd**2).sqrt()
    expected = c_skip[:, None] * x + c_out[:, None] * d.net(c_in[:, None] * x, sigma.log() / 4)
    torch.testing.assert_close(d(x, sigma), expected, rtol=1e-12, atol=1e-12)
    scalar = d(x, 0.3)
    torch.testing.assert_close(scalar, d(x, torch.full((5,), 0.3, dtype=F64)), rtol=0, atol=0)


@pytest.mark.parametrize("kind,shape", [("mlp", (4,)), ("unet", (1, 8, 8))])
def test_denoiser_is_identity_at_tiny_sigma(kind, shape):
    config = {"dim": 4} if kind == "mlp" else {"widths": (8, 16), "emb_dim": 8}
    d = seeded(kind, **config).double()
    x = torch.randn(3, *shape, dtype=F64)
    out = d(x, 1e-6)
    # D - x = (c_skip - 1) x + c_out F with c_out ~ sigma: O(1e-6) for an O(1) network output
    assert (out - x).abs().max() < 1e-4
    assert out.dtype == F64 and d(x.float(), 0.5).dtype == torch.float32


@pytest.mark.parametrize("net", [
    MLPNet(3, widths=(16, 8, 4), emb_dim=6), UNetNet(1, widths=(8, 16), emb_dim=8, inner=(4, 8, 12, 8, 4)),
])
def test_config_round_trip(net):
    again = type(net)(**net.config())
    assert again.config() == net.config()
    assert [p.shape for p in again.parameters()] == [p.shape for p in net.parameters()]
    d = EDMPrecond(net, sigma_data=0.3)
    rebuilt = make_denoiser(**d.config())
    assert rebuilt.config() == d.config() and rebuilt.sigma_data == 0.3


def test_network_bad_inputs():
    with pytest.raises(ValueError, match="kind"):
        make_denoiser("transformer")
    with pytest.raises(ValueError, match="widths"):
        MLPNet(2, widths=(8, 0))
    with pytest.raises(ValueError, match="emb_dim"):
        MLPNet(2, emb_dim=7)
    with pytest.raises(ValueError, match="inner"):
        UNetNet(widths=(8, 16), inner=(8, 8))
    d = seeded("mlp", dim=2)
    with pytest.raises(ValueError, match="sigma"):
        d(torch.randn(4, 2), torch.ones(3))
    with pytest.raises(ValueError, match="x_in"):
        d(torch.randn(4, 3), 1.0)


# ---------------------------------------------------------------- groups and budgets
def test_snr_group_edges_equal_db_width():
    edges = snr_group_edges(4, 0.002, 80.0, 0.5)
    assert edges[0] == 0.002 and edges[-1] == 80.0
    db = [snr_db(e, 0.5) for e in edges]
    assert db[0] == pytest.approx(20 * math.log10(0.5 / 0.002))
    widths = [a - b for a, b in zip(db[:-1], db[1:], strict=True)]
    assert widths == pytest.approx([widths[0]] * 4, rel=1e-12)
    assert widths[0] == pytest.approx((20 * math.log10(80 / 0.002)) / 4)
    # SNR = sigma_data^2 / sigma^2 is 1 (0 dB) at sigma = sigma_data
    assert snr_db(0.5, 0.5) == 0.0


def test_group_index_edges_are_half_open():
    edges = [0.1, 1.0, 10.0]
    sigma = torch.tensor([0.1, 0.5, 1.0, 9.99, 10.0])
    assert group_index(sigma, edges).tolist() == [0, 0, 1, 1, 1]
    with pytest.raises(ValueError, match="outside"):
        group_index(torch.tensor([10.5]), edges)


def test_budgets_formula_and_hardest_keeps_full_model():
    assert flops_budgets(4, 0.5, 100.0) == pytest.approx([62.5, 75.0, 87.5, 100.0])
    assert flops_budgets(1, 0.3, 10.0) == [10.0]
    # ranks follow difficulty: the hardest group (index 0 here) gets F_base, the easiest (i = 1) the smallest budget
    assert budgets_by_group([5.0, 1.0, 3.0], 0.4, 30.0) == pytest.approx([30.0, 18.0, 24.0])
    with pytest.raises(ValueError, match="k"):
        flops_budgets(4, 0.0, 1.0)


def test_restricted_lognormal_is_edm_law_on_the_full_range():
    n = torch.randn(1000, dtype=F64)
    torch.testing.assert_close(restrict_lognormal(n, 0.0, math.inf), (-1.2 + 1.2 * n).exp(), rtol=0, atol=0)
    # a range restriction is a monotone map of the same draw: order is kept, and the law is restricted (not clipped)
    s = restrict_lognormal(n, 0.05, 0.5)
    assert torch.equal(s.argsort(), n.argsort()) and s.min() >= 0.05 and s.max() <= 0.5


def test_truncated_lognormal_stays_in_group_and_matches_law():
    gen = torch.Generator().manual_seed(0)
    s = truncated_lognormal(20000, 0.1, 2.0, generator=gen).double()
    assert s.min() >= 0.1 and s.max() <= 2.0
    # the truncated law's mean of ln sigma, by quadrature
    grid = torch.linspace(math.log(0.1), math.log(2.0), 20001, dtype=F64)
    w = torch.exp(-0.5 * ((grid + 1.2) / 1.2) ** 2)
    assert s.log().mean().item() == pytest.approx((grid * w).sum().item() / w.sum().item(), abs=0.02)


# ---------------------------------------------------------------- pruning
@pytest.mark.parametrize("kind,config,shape", [
    ("mlp", {"dim": 3, "widths": (12, 10, 6), "emb_dim": 8}, (3,)),
    ("unet", {"widths": (8, 16), "emb_dim": 8}, (1, 8, 8)),
])
def test_prune_all_units_is_bitwise_identity(kind, config, shape):
    d = seeded(kind, **config)
    same = prune(d, prunable_widths(d))
    x = torch.randn(4, *shape)
    assert torch.equal(same(x, torch.tensor([0.01, 0.5, 3.0, 40.0])), d(x, torch.tensor([0.01, 0.5, 3.0, 40.0])))
    assert all(torch.equal(a, b) for a, b in zip(same.state_dict().values(), d.state_dict().values(), strict=True))


def test_prune_keeps_exactly_the_important_units():
    d = seeded("mlp", dim=2, widths=(6, 5), emb_dim=4)
    with torch.no_grad():  # make units 1 and 4 of layer 0 clearly the most important, unit 2 of layer 1 dead
        d.net.layers[0].weight[[1, 4]] *= 10
        d.net.out.weight[:, 2] = 0
    imp = unit_importance(d)
    assert imp[1][2] == 0
    small = prune(d, (2, 4))
    assert prunable_widths(small) == (2, 4)
    torch.testing.assert_close(small.net.layers[0].weight, d.net.layers[0].weight[[1, 4]], rtol=0, atol=0)
    torch.testing.assert_close(small.net.embs[0].bias, d.net.embs[0].bias[[1, 4]], rtol=0, atol=0)
    torch.testing.assert_close(small.net.layers[1].weight, d.net.layers[1].weight[[0, 1, 3, 4]][:, [1, 4]], rtol=0, atol=0)
    torch.testing.assert_close(small.net.out.weight, d.net.out.weight[:, [0, 1, 3, 4]], rtol=0, atol=0)
    # the pruned network is the original with the removed units' activations zeroed
    x, sigma = torch.randn(7, 2), torch.rand(7) + 0.1
    masked = seeded("mlp", dim=2, widths=(6, 5), emb_dim=4)
    masked.load_state_dict(d.state_dict())
    with torch.no_grad():
        masked.net.layers[1].weight[:, [0, 2, 3, 5]] = 0
        masked.net.out.weight[:, 2] = 0
    torch.testing.assert_close(small(x, sigma), masked(x, sigma), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="widths"):
        prune(d, (7, 5))


def test_prune_unet_output_shape_and_config():
    d = seeded("unet", widths=(8, 16), emb_dim=8)
    small = prune(d, (4, 8, 8, 8, 4))
    assert small.config() == pruned_config(d, (4, 8, 8, 8, 4))
    assert small(torch.randn(2, 1, 8, 8), 0.5).shape == (2, 1, 8, 8)


# ---------------------------------------------------------------- FLOPs
def test_flops_match_hand_count_for_mlp():
    dim, widths, emb = 3, (16, 8), 6
    d = seeded("mlp", dim=dim, widths=widths, emb_dim=emb)
    linears = [(emb, emb), (dim, 16), (16, 8), (emb, 16), (emb, 8), (8, dim)]  # emb_mlp, layers, embs, out
    hand = sum(2 * a * b for a, b in linears)
    assert denoiser_flops(d, (dim,)) == hand
    assert config_flops(d.config(), (dim,)) == hand
    sigmas = [80.0, 10.0, 1.0, 0.1, 0.0]
    assert sampling_flops(d, (dim,), sigmas, "heun") == hand * 7  # 3 Heun steps (2 evaluations) + 1 Euler step
    assert sampling_flops(d, (dim,), sigmas, "euler") == hand * 4


def test_sampling_flops_follow_the_routing():
    big = seeded("mlp", dim=2, widths=(32, 32), emb_dim=4)
    small = prune(big, (8, 8))
    grouped = GroupedDenoiser([(0.0, 1.0, small), (1.0, math.inf, big)])
    sigmas = [80.0, 10.0, 1.0, 0.1, 0.0]  # Euler: evaluations at 80, 10 (big), 1 (big, edge), 0.1 (small)
    expected = 3 * denoiser_flops(big, (2,)) + denoiser_flops(small, (2,))
    assert sampling_flops(grouped, (2,), sigmas, "euler") == expected


# ---------------------------------------------------------------- search
def _toy_search(seed):
    full = (64, 64, 64)

    def flops(w):  # the MLP's hand count (checked against FlopCounterMode above)
        sizes = (2, *w, 2)
        return 2.0 * (8 * 8 + sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True)) + 8 * sum(w))

    score = lambda w: float(sum((a - b) ** 2 for a, b in zip(w, (16, 64, 24), strict=True)))  # noqa: E731
    budget = 0.5 * flops(full)
    search = WidthSearch(full, budget, flops, score, granularity=8, seed=seed)
    return search.run(rounds=3, initial=3, per_round=3, parents=2), budget, flops


def test_search_respects_budget_and_is_deterministic():
    result, budget, flops = _toy_search(0)
    rounds = [sum(e.round == r for e in result.bank) for r in range(4)]
    assert rounds[0] == 3 and all(1 <= n <= 3 for n in rounds[1:])  # rounds stop proposing once the bank has them all
    assert all(e.flops <= budget and e.flops == flops(e.widths) for e in result.bank)
    assert flops((64, 64, 64)) == config_flops({"kind": "mlp", "dim": 2, "widths": (64, 64, 64), "emb_dim": 8}, (2,))
    assert all(w % 8 == 0 and 8 <= w <= 64 for e in result.bank for w in e.widths)
    assert result.best.score == min(e.score for e in result.bank)
    assert result.best.score < result.bank[0].score  # the rounds improve on uniform scaling
    again, _, _ = _toy_search(0)
    assert again.bank == result.bank
    other, _, _ = _toy_search(1)
    assert other.bank != result.bank


def test_search_rejects_impossible_budget():
    flops = lambda w: float(sum(w))  # noqa: E731
    with pytest.raises(ValueError, match="budget"):
        WidthSearch((64, 64), 10.0, flops, lambda w: 0.0, granularity=8)


# ---------------------------------------------------------------- difficulty
def test_excess_loss_is_zero_for_the_optimal_denoiser():
    gm = GaussianMixture.ring(k=4, radius=1.0, std=0.2)
    x0 = gm.sample(512, generator=torch.Generator().manual_seed(0)).float()
    result = group_losses(gm.denoiser, x0, [0.01, 0.5, 20.0], reference=gm.denoiser, n_draws=1)
    assert result.excess == [0.0, 0.0] and all(v > 0 for v in result.irreducible)
    data = torch.randn(50, 3, dtype=F64)
    emp = EmpiricalDenoiser(data)
    torch.testing.assert_close(emp(data, torch.full((50,), 1e-4, dtype=F64)), data)  # tiny noise: the nearest point
    torch.testing.assert_close(emp(data[:2], torch.full((2,), 1e4, dtype=F64)), data.mean(0).expand(2, 3), rtol=0, atol=1e-6)


# ---------------------------------------------------------------- GroupedDenoiser
def test_grouped_denoiser_routes_mixed_batches():
    models = [seeded("mlp", seed=i, dim=2, widths=(8,), emb_dim=4) for i in range(3)]
    grouped = GroupedDenoiser([(1.0, 10.0, models[1]), (0.0, 1.0, models[0]), (10.0, math.inf, models[2])])
    assert grouped.edges == [0.0, 1.0, 10.0, math.inf]
    x = torch.randn(9, 2)
    sigma = torch.tensor([0.1, 50.0, 1.0, 3.0, 0.999, 10.0, 0.5, 200.0, 9.0])
    out = grouped(x, sigma)
    for g, (lo, hi) in enumerate([(0.0, 1.0), (1.0, 10.0), (10.0, math.inf)]):
        rows = ((sigma >= lo) & (sigma < hi)).nonzero().squeeze(1)
        assert torch.equal(out[rows], models[g](x[rows], sigma[rows]))
    # one group for the whole batch: exactly the group's model on the full batch
    assert torch.equal(grouped(x, 2.0), models[1](x, torch.full((9,), 2.0)))


def test_grouped_denoiser_errors():
    m = seeded("mlp", dim=2, widths=(4,), emb_dim=4)
    with pytest.raises(ValueError, match="gap"):
        GroupedDenoiser([(0.0, 1.0, m), (2.0, 3.0, m)])
    with pytest.raises(ValueError, match="overlap"):
        GroupedDenoiser([(0.0, 1.5, m), (1.0, 3.0, m)])
    with pytest.raises(ValueError, match="sigma_lo < sigma_hi"):
        GroupedDenoiser([(1.0, 1.0, m)])
    with pytest.raises(ValueError, match="at least one"):
        GroupedDenoiser([])
    with pytest.raises(TypeError, match="callable"):
        GroupedDenoiser([(0.0, 1.0, "model")])
    grouped = GroupedDenoiser([(0.1, 1.0, m)])
    with pytest.raises(ValueError, match="outside"):
        grouped(torch.randn(2, 2), torch.tensor([0.5, 2.0]))
    with pytest.raises(ValueError, match="sigma"):
        grouped(torch.randn(2, 2), torch.ones(3))


# ---------------------------------------------------------------- stage 2 end to end (tiny)
def test_divide_and_conquer_respects_budgets_and_routes():
    from fastdiff.train.data import MixtureData
    from fastdiff.train.tdc.pipeline import TDCConfig, divide_and_conquer
    from fastdiff.train.tdc.training import loop_trainer

    gm = GaussianMixture.ring(k=4, radius=1.0, std=0.2)
    data = gm.sample(512, generator=torch.Generator().manual_seed(0)).float()
    base = seeded("mlp", dim=2, widths=(32, 32), emb_dim=8)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    config = TDCConfig(n_groups=3, k=0.4, finetune_steps=3, proxy_steps=2, rounds=1, initial=2, per_round=2, granularity=8)
    train = loop_trainer(MixtureData(gm), batch_size=32)
    result = divide_and_conquer(base, train, data, data[:256], config, reference=gm.denoiser, progress=False)
    assert all(torch.equal(v, base.state_dict()[k]) for k, v in before.items())  # the base is not modified
    full = config_flops(base.config(), (2,))
    assert sorted(g.budget for g in result.groups) == pytest.approx(flops_budgets(3, 0.4, full))
    assert all(g.flops <= g.budget for g in result.groups)
    hardest = result.difficulty.hardest
    assert result.groups[hardest].widths == (32, 32) and result.groups[hardest].bank == []
    assert result.grouped.edges[0] == 0.0 and result.grouped.edges[-1] == math.inf
    x = torch.randn(6, 2)
    sigma = torch.tensor([0.001, 0.01, 0.3, 3.0, 30.0, 500.0])
    out = result.grouped(x, sigma)
    for i in range(6):
        g = int(group_index(sigma[i:i + 1].clamp(0.002, 80.0), result.edges))
        torch.testing.assert_close(out[i:i + 1], result.grouped.denoisers[g](x[i:i + 1], sigma[i:i + 1]))


def test_group_loss_on_the_full_range_is_the_library_dsm_loss():
    from fastdiff.train import dsm_loss
    from fastdiff.train.tdc.noise_levels import group_dsm_loss

    d = seeded("mlp", dim=2, widths=(8,), emb_dim=4)
    x0 = torch.randn(16, 2)
    seeds = list(range(100, 116))
    ours = group_dsm_loss(d, x0, 0.0, math.inf, seed=seeds)
    torch.testing.assert_close(ours, dsm_loss(d, x0, seed=seeds), rtol=1e-6, atol=0)
    assert group_dsm_loss(d, x0, 0.1, 1.0, seed=seeds) != ours


def test_cli_subcommand_parses():
    import argparse

    from fastdiff.train.tdc.cli import add_subcommand, run_tdc_command

    parser = argparse.ArgumentParser()
    add_subcommand(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["tdc", "--preset", "digits", "--k", "0.4", "--groups", "3", "--finetune-steps", "7"])
    assert (args.preset, args.k, args.groups, args.finetune_steps, args.run) == ("digits", 0.4, 3, 7, run_tdc_command)
    with pytest.raises(SystemExit):
        parser.parse_args(["tdc", "--preset", "cifar"])
