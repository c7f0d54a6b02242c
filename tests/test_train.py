"""fastdiff.train: losses against exact answers, EMA, checkpoint resume, DDP equivalence, distributed sampling, CLI."""

from __future__ import annotations

import argparse
import csv
import math
import os

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fastdiff.toy import GaussianMixture
from fastdiff.train import (
    MixtureData,
    TensorData,
    TrainConfig,
    Trainer,
    cdm_loss,
    consistency_loss,
    dsm_loss,
    ema_update,
    load_digits,
    sample_distributed,
    toy_mixture,
)
from fastdiff.train.cli import add_subcommand
from fastdiff.train.draws import CounterDraws
from fastdiff.train.loop import ema_decay_at
from fastdiff.train.losses import edm_weight
from fastdiff.train.networks import make_denoiser


def _chunk_stats(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of independent chunk estimates."""
    v = torch.tensor(values, dtype=torch.float64)
    return float(v.mean()), float(v.std() / math.sqrt(len(values)))


def _lognormal_expectation(f, P_mean: float = -1.2, P_std: float = 1.2, order: int = 80) -> float:
    """E[f(sigma)] for log sigma ~ N(P_mean, P_std^2) by Gauss-Hermite quadrature."""
    nodes, weights = np.polynomial.hermite_e.hermegauss(order)
    sigma = np.exp(P_mean + P_std * nodes)
    return float((weights * f(sigma)).sum() / weights.sum())


# ----------------------------------------------------------------------------------------------- DSM
@pytest.mark.parametrize("std", [0.5, 1.5])
def test_dsm_loss_of_exact_gaussian_denoiser_is_its_irreducible_value(std):
    """Data N(mu, s^2 I): the exact denoiser leaves posterior variance s^2 sigma^2 / (s^2 + sigma^2) per element, so
    E[L_dsm] = E_sigma[lambda(sigma) s^2 sigma^2 / (s^2 + sigma^2)] (exactly 1 when s = sigma_data = 0.5)."""
    gauss = GaussianMixture.gaussian(torch.tensor([0.3, -1.0, 2.0]), std)
    sd = 0.5
    exact = _lognormal_expectation(lambda s: (s**2 + sd**2) / (s * sd) ** 2 * std**2 * s**2 / (std**2 + s**2))
    if std == sd:
        assert exact == pytest.approx(1.0, abs=1e-12)
    gen = torch.Generator().manual_seed(0)
    chunks = [float(dsm_loss(gauss.denoiser, gauss.sample(2000, generator=gen), generator=gen)) for _ in range(20)]
    mean, se = _chunk_stats(chunks)
    assert abs(mean - exact) < 4 * se, (mean, se, exact)
    assert se < 0.02 * exact


def test_dsm_loss_matches_hand_computation_from_its_draws():
    denoiser = make_denoiser("mlp", dim=2, widths=(16, 16))
    x0 = torch.randn(9, 2, generator=torch.Generator().manual_seed(1))
    seeds = list(range(100, 109))
    draws = CounterDraws(seeds)
    sigma = (-1.2 + 1.2 * draws.normal(9, (), 0, torch.float32, x0.device)).exp()
    x = x0 + sigma[:, None] * draws.normal(9, (2,), 1, torch.float32, x0.device)
    weight = (sigma**2 + 0.25) / (sigma * 0.5) ** 2
    by_hand = (weight * ((denoiser(x, sigma) - x0) ** 2).mean(1)).mean()
    torch.testing.assert_close(dsm_loss(denoiser, x0, seed=seeds), by_hand, rtol=1e-6, atol=0)
    torch.testing.assert_close(edm_weight(sigma, 0.5), weight)


@pytest.mark.parametrize("loss", [dsm_loss, cdm_loss])
def test_per_sample_seeds_make_the_loss_independent_of_the_batch_split(loss):
    denoiser = make_denoiser("mlp", dim=2, widths=(16, 16))
    x0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(2))
    seeds = [7 * i + 3 for i in range(8)]
    whole = loss(denoiser, x0, seed=seeds)
    halves = (loss(denoiser, x0[:4], seed=seeds[:4]) + loss(denoiser, x0[4:], seed=seeds[4:])) / 2
    torch.testing.assert_close(whole, halves, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------- CDM
def test_consistency_loss_vanishes_for_the_exact_denoiser_and_not_for_an_inconsistent_one():
    """E[D(x', sigma') | x] = D(x, sigma) for the exact denoiser (tower property), so E[L_cp] = 0 up to the chains'
    Euler-Maruyama error. Adding an offset 0.2 log(sigma) per coordinate makes it inconsistent: the expected drift of
    its output from sigma to sigma' is 0.2 log(sigma' / sigma) per coordinate. (Not every wrong denoiser is
    inconsistent: the exact denoiser of another distribution is consistent, so L_cp alone does not measure error.)"""
    gm = toy_mixture()

    def offset(x, sigma):
        return gm.denoiser(x, sigma) + 0.2 * sigma.log()[:, None]

    gen = torch.Generator().manual_seed(3)
    exact, wrong = [], []
    for _ in range(10):
        x0 = gm.sample(2000, generator=gen)
        exact.append(float(consistency_loss(gm.denoiser, x0, generator=gen)))
        wrong.append(float(consistency_loss(offset, x0, generator=gen)))
    exact_mean, exact_se = _chunk_stats(exact)
    wrong_mean, wrong_se = _chunk_stats(wrong)
    assert abs(exact_mean) < 4 * exact_se + 1e-5, (exact_mean, exact_se)
    assert wrong_mean > 8 * wrong_se and wrong_mean > 20 * (abs(exact_mean) + exact_se), (wrong_mean, exact_mean)


class _Recorder(torch.nn.Module):
    """Wraps a denoiser and records every call's inputs and whether gradients were enabled."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.calls = []

    def forward(self, x, sigma):
        self.calls.append((x, sigma, torch.is_grad_enabled()))
        return self.inner(x, sigma)


def test_consistency_gradient_flows_through_the_three_denoiser_calls_only():
    torch.manual_seed(0)
    rec = _Recorder(make_denoiser("mlp", dim=2, widths=(16, 16)))
    x0 = torch.randn(6, 2, generator=torch.Generator().manual_seed(4))
    loss = consistency_loss(rec, x0, seed=list(range(6)), chain_steps=5)
    with_grad = [c for c in rec.calls if c[2]]
    assert len(with_grad) == 3 and len(rec.calls) == 3 + 2 * 5
    (x, sigma, _), (x1, sigma_end, _), (x2, sigma_end2, _) = with_grad
    assert not x1.requires_grad and not x2.requires_grad and not sigma_end.requires_grad
    assert bool((sigma_end <= sigma).all()) and bool((sigma - sigma_end <= 0.05 + 1e-7).all())
    assert not torch.equal(x1, x2)  # independent chains
    params = list(rec.inner.parameters())
    grads = torch.autograd.grad(loss, params)
    d0 = rec.inner(x, sigma)
    by_hand = ((rec.inner(x1, sigma_end) - d0) * (rec.inner(x2, sigma_end2) - d0)).mean(1).mean()
    torch.testing.assert_close(loss, by_hand, rtol=1e-6, atol=1e-9)
    for g, h in zip(grads, torch.autograd.grad(by_hand, params), strict=True):
        torch.testing.assert_close(g, h, rtol=1e-5, atol=1e-8)


def test_cdm_loss_is_dsm_plus_lambda_times_consistency_on_shared_draws():
    denoiser = make_denoiser("mlp", dim=2, widths=(16, 16))
    x0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(5))
    seeds = list(range(5))
    total = cdm_loss(denoiser, x0, lambda_cp=3.0, seed=seeds)
    parts = dsm_loss(denoiser, x0, seed=seeds) + 3.0 * consistency_loss(denoiser, x0, seed=seeds)
    torch.testing.assert_close(total, parts, rtol=1e-6, atol=1e-7)


# ----------------------------------------------------------------------------------------------- training loop
def test_ema_update_math():
    model, ema = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    e0 = ema.weight.detach().clone()
    m1 = model.weight.detach().clone()
    ema_update(ema, model, 0.75)
    with torch.no_grad():
        model.weight.add_(1.0)
    ema_update(ema, model, 0.75)
    torch.testing.assert_close(ema.weight, 0.75 * (0.75 * e0 + 0.25 * m1) + 0.25 * (m1 + 1.0))


def _tiny_trainer(loss: str = "dsm", batch: int = 16, steps: int = 12) -> Trainer:
    torch.manual_seed(0)
    config = TrainConfig(steps=steps, batch_size=batch, lr=1e-2, loss=loss, ema_decay=0.9, seed=5)
    return Trainer(make_denoiser("mlp", dim=2, widths=(16, 16), emb_dim=8), MixtureData(toy_mixture()), config)


def test_trainer_ema_follows_the_weights_with_warmup():
    """beta_t = min(ema_decay, (1 + t) / (10 + t)): 0.1 after step 0, 0.9 (= ema_decay) after step 80."""
    assert ema_decay_at(0.9, 0) == pytest.approx(0.1) and ema_decay_at(0.9, 80) == 0.9
    trainer = _tiny_trainer(steps=2)
    ema = [p.detach().clone() for p in trainer.model.parameters()]
    for t in range(2):
        trainer.train(t + 1, progress=False)
        beta = ema_decay_at(0.9, t)
        ema = [beta * e + (1 - beta) * p.detach() for e, p in zip(ema, trainer.model.parameters(), strict=True)]
    for e, expected in zip(trainer.ema.parameters(), ema, strict=True):
        torch.testing.assert_close(e, expected)


def test_checkpoint_resume_is_bitwise_identical(tmp_path):
    full = _tiny_trainer("cdm")
    full.train(progress=False)
    part = _tiny_trainer("cdm")
    part.train(5, progress=False)
    part.save(tmp_path / "ckpt.pt")
    torch.manual_seed(123)  # the resumed run must not depend on the global RNG at resume time
    resumed = Trainer.resume(tmp_path / "ckpt.pt", MixtureData(toy_mixture()))
    assert resumed.step == 5
    resumed.train(progress=False)
    assert resumed.log == full.log
    for a, b in zip(resumed.model.state_dict().values(), full.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(resumed.ema.state_dict().values(), full.ema.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(resumed.optimizer.state_dict()["state"].values(), full.optimizer.state_dict()["state"].values(),
                    strict=True):
        assert all(torch.equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------- DDP
def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        trainer = _tiny_trainer("cdm", batch=16, steps=20)
        trainer.train(progress=False)
        trainer.save(os.path.join(out_dir, "ddp.pt"))
        try:  # another run's file: rank 0 refuses, and every rank learns that it did instead of waiting forever
            trainer.save(os.path.join(out_dir, "foreign.pt"))
            refused = None
        except (FileExistsError, RuntimeError) as err:
            refused = type(err).__name__
        gm = toy_mixture()
        samples = sample_distributed(gm.denoiser, (2,), 7, [80.0, 5.0, 1.0, 0.1, 0.0], "euler_maruyama", seed=11,
                                     dtype=torch.float64)
        torch.save({"log": trainer.log, "params": [p.detach() for p in trainer.model.parameters()],
                    "grads": [p.grad for p in trainer.model.parameters()], "samples": samples, "refused": refused},
                   os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_train_and_sample_like_one_process_with_the_doubled_batch(tmp_path):
    """2 ranks x batch 8 see the data and noise of 1 rank x batch 16; DDP averages the gradients, so the loss curves,
    the last step's gradients (which would be 2x if DDP summed them) and the weights agree to float tolerance. Rank 0
    writes the checkpoint, and a refused save raises on every rank."""
    (tmp_path / "foreign.pt").write_bytes(b"another run")
    workers = mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=False)
    single = _tiny_trainer("cdm", batch=16, steps=20)  # meanwhile, the single-process run with the doubled batch
    single.train(progress=False)
    while not workers.join():
        pass
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [ranks[0]["refused"], ranks[1]["refused"]] == ["FileExistsError", "RuntimeError"]
    assert (tmp_path / "foreign.pt").read_bytes() == b"another run"
    assert torch.load(tmp_path / "ddp.pt", weights_only=True)["log"] == ranks[0]["log"]
    ddp_loss = [row["loss"] for row in ranks[0]["log"]]
    one_loss = [row["loss"] for row in single.log]
    np.testing.assert_allclose(ddp_loss, one_loss, rtol=1e-4, atol=1e-6)
    assert ddp_loss[0] != ddp_loss[-1]
    for r in range(2):
        for a, b in zip(ranks[r]["params"], single.model.parameters(), strict=True):
            torch.testing.assert_close(a, b.detach(), rtol=1e-4, atol=1e-5)
    for a, b in zip(ranks[0]["grads"], single.model.parameters(), strict=True):
        torch.testing.assert_close(a, b.grad, rtol=1e-3, atol=1e-6)
    gm = toy_mixture()
    alone = sample_distributed(gm.denoiser, (2,), 7, [80.0, 5.0, 1.0, 0.1, 0.0], "euler_maruyama", seed=11,
                               dtype=torch.float64)
    assert ranks[1]["samples"] is None
    torch.testing.assert_close(ranks[0]["samples"], alone, rtol=1e-12, atol=1e-12)


def test_distributed_sampling_is_per_sample():
    """Sample i depends on its seed only: the first 3 of 7 are the 3 of a run with n = 3."""
    gm = toy_mixture()
    grid = [80.0, 2.0, 0.5, 0.0]
    seven = sample_distributed(gm.denoiser, (2,), 7, grid, "euler_maruyama", seed=4, dtype=torch.float64)
    three = sample_distributed(gm.denoiser, (2,), 3, grid, "euler_maruyama", seed=4, dtype=torch.float64)
    assert seven.shape == (7, 2)
    torch.testing.assert_close(seven[:3], three, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------- data and CLI
def test_digits_data():
    digits = load_digits()
    assert digits.shape == (1797, 1, 8, 8) and digits.dtype == torch.float32
    assert float(digits.min()) == -1.0 and float(digits.max()) == 1.0
    batch = TensorData(digits).draw(5, torch.Generator().manual_seed(0))
    assert batch.shape == (5, 1, 8, 8)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_subcommand(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_trains_writes_files_and_resumes(tmp_path):
    out = tmp_path / "run"
    common = ["--batch", "16", "--out", str(out), "--no-progress", "--samples", "20"]
    args = _parse(["train", "--steps", "4", "--loss", "cdm", *common])
    assert args.run(args) == 0
    assert {p.name for p in out.iterdir()} >= {"checkpoint.pt", "losses.csv", "samples.png"}
    args = _parse(["train", "--steps", "6", "--resume", str(out / "checkpoint.pt"), *common])
    assert args.run(args) == 0
    with open(out / "losses.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == list(range(6))
    assert torch.load(out / "checkpoint.pt", weights_only=False)["config"]["loss"] == "cdm"


def test_cli_digits_preset(tmp_path):
    args = _parse(["train", "--preset", "digits", "--steps", "2", "--batch", "4", "--samples", "4",
                   "--out", str(tmp_path), "--no-progress"])
    assert args.run(args) == 0
    assert (tmp_path / "samples.png").stat().st_size > 0


# ----------------------------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_naming_the_argument():
    denoiser = make_denoiser("mlp", dim=2, widths=(8,))
    x0 = torch.zeros(4, 2)
    with pytest.raises(TypeError, match="denoiser"):
        dsm_loss("not callable", x0)
    with pytest.raises(ValueError, match="x0"):
        dsm_loss(denoiser, torch.zeros(4))
    with pytest.raises(ValueError, match="x0"):
        dsm_loss(denoiser, torch.full((4, 2), float("nan")))
    with pytest.raises(ValueError, match="P_std"):
        dsm_loss(denoiser, x0, P_std=0.0)
    with pytest.raises(ValueError, match="sigma_data"):
        dsm_loss(denoiser, x0, sigma_data=-1.0)
    with pytest.raises(ValueError, match="generator and seed"):
        dsm_loss(denoiser, x0, generator=torch.Generator(), seed=[1, 2, 3, 4])
    with pytest.raises(ValueError, match="one seed per sample"):
        dsm_loss(denoiser, x0, seed=[1, 2])
    with pytest.raises(TypeError, match="seed must be a list"):
        dsm_loss(denoiser, x0, seed=5)
    with pytest.raises(ValueError, match="chain_steps"):
        consistency_loss(denoiser, x0, chain_steps=0)
    with pytest.raises(ValueError, match="max_step"):
        consistency_loss(denoiser, x0, max_step=-0.1)
    with pytest.raises(ValueError, match="lambda_cp"):
        cdm_loss(denoiser, x0, lambda_cp=float("inf"))
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="l1")
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainConfig(ema_decay=1.0)
    with pytest.raises(TypeError, match="denoiser"):
        Trainer(torch.nn.Linear(2, 2), MixtureData(toy_mixture()), TrainConfig())
    with pytest.raises(TypeError, match="mixture"):
        MixtureData("ring")
    with pytest.raises(ValueError, match="data"):
        TensorData(torch.zeros(5, dtype=torch.int64))
    with pytest.raises(ValueError, match="shape"):
        sample_distributed(denoiser, (), 4, [1.0, 0.0])
    with pytest.raises(ValueError, match="n must be"):
        sample_distributed(denoiser, (2,), 0, [1.0, 0.0])
    with pytest.raises(SystemExit, match="--steps"):
        args = _parse(["train", "--steps", "0"])
        args.run(args)
