"""TDC stage 2 (docs/ALGORITHMS.md section 9): from a trained base denoiser to a `GroupedDenoiser` of pruned,
group-fine-tuned copies.

1. Split [sigma_min, sigma_max] into N equal SNR-dB groups (`groups.snr_group_edges`).
2. Measure the base model's per-group excess loss (`difficulty.group_losses`, loss minus a reference optimum's)
   and rank the groups by it; the i-th easiest gets the budget (i/N + (N - i)/N k) F_base, so the hardest keeps the
   full model (F_base: FLOPs of one base evaluation per sample).
3. For each group below F_base, search per-layer widths under its budget (`search.WidthSearch`): a configuration's
   score is the held-out group loss of `prune(base, widths)` after `proxy_steps` of group fine-tuning.
4. Prune a copy of the base model to each group's best widths (the hardest group: an unpruned copy) and fine-tune
   it for `finetune_steps` on its group's noise levels only.
5. Route with `fastdiff.models.GroupedDenoiser`; the outermost groups extend to sigma = 0 and sigma = inf.

Training is delegated to `train(denoiser, (lo, hi), steps, seed) -> denoiser` (`training.loop_trainer`: the library's
`fastdiff.train.Trainer` on the DSM loss restricted to sigma in [lo, hi]); this module never steps an optimizer.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from fastdiff.models import GroupedDenoiser
from fastdiff.progress import progress_range
from fastdiff.train.networks import EDMPrecond
from fastdiff.train.tdc.difficulty import GroupLoss, group_losses
from fastdiff.train.tdc.flops import config_flops
from fastdiff.train.tdc.groups import budgets_by_group, snr_group_edges
from fastdiff.train.tdc.prune import prunable_widths, prune, pruned_config
from fastdiff.train.tdc.search import Entry, WidthSearch
from fastdiff.train.tdc.training import TrainFn


@dataclass(frozen=True)
class TDCConfig:
    """Stage-2 settings. Search cost: per pruned group, initial + rounds * per_round proxy fine-tunes of proxy_steps."""

    n_groups: int = 4
    k: float = 0.5
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    P_mean: float = -1.2
    P_std: float = 1.2
    finetune_steps: int = 500
    proxy_steps: int = 100
    rounds: int = 3
    initial: int = 4
    per_round: int = 3
    parents: int = 2
    granularity: int = 8
    seed: int = 0


@dataclass
class GroupReport:
    """What stage 2 decided for one group (sigma range [lo, hi) before the outer edges are opened)."""

    lo: float
    hi: float
    budget: float
    widths: tuple[int, ...]
    flops: float
    bank: list[Entry] = field(default_factory=list)


@dataclass
class TDCResult:
    grouped: GroupedDenoiser
    edges: list[float]
    difficulty: GroupLoss
    base_flops: float
    groups: list[GroupReport]
    proxy_steps_total: int
    finetune_steps_total: int


def divide_and_conquer(
    base: EDMPrecond, train: TrainFn, x0: torch.Tensor, heldout: torch.Tensor, config: TDCConfig = TDCConfig(), *,
    reference: Callable | None = None, proxy_train: TrainFn | None = None, progress: bool | None = None,
) -> TDCResult:
    """Stage 2 of TDC on a trained `base` (module docstring). `train`: the fine-tuning trainer (`proxy_train`, default
    `train`, runs the search's short fine-tunes); `x0`: training points [N, ...] for the difficulty measure;
    `heldout`: points scoring the search; `reference`: the optimal denoiser D*(x, sigma) of the training objective
    (None: the plain per-group loss ranks the groups). The base model is not modified."""
    if not isinstance(base, EDMPrecond):
        raise TypeError(f"base must be a fastdiff.train.networks.EDMPrecond, got {type(base).__name__}")
    sd = base.sigma_data
    proxy_train = proxy_train or train
    shape = tuple(x0.shape[1:])
    edges = snr_group_edges(config.n_groups, config.sigma_min, config.sigma_max, sd)
    difficulty = group_losses(base, x0, edges, reference=reference, P_mean=config.P_mean, P_std=config.P_std,
                              sigma_data=sd, seed=config.seed)
    base_flops = config_flops(base.config(), shape)
    budgets = budgets_by_group(difficulty.excess, config.k, base_flops)
    reports, models, proxy_total = [], [], 0
    for g in progress_range(config.n_groups, progress, desc="tdc groups"):
        lo, hi = edges[g], edges[g + 1]
        seed = config.seed * 1000 + g
        if budgets[g] >= base_flops * (1 - 1e-12):
            widths, bank = prunable_widths(base), []
        else:
            def score(widths: tuple[int, ...], lo: float = lo, hi: float = hi, seed: int = seed) -> float:
                tuned = proxy_train(prune(base, widths), (lo, hi), config.proxy_steps, seed)
                result = group_losses(tuned, heldout, [lo, hi], P_mean=config.P_mean, P_std=config.P_std,
                                      sigma_data=sd, seed=config.seed + 7)
                return result.loss[0]

            search = WidthSearch(prunable_widths(base), budgets[g],
                                 lambda w: config_flops(pruned_config(base, w), shape), score,
                                 granularity=config.granularity, seed=seed)
            found = search.run(rounds=config.rounds, initial=config.initial, per_round=config.per_round,
                               parents=config.parents)
            widths, bank = found.best.widths, found.bank
            proxy_total += len(bank) * config.proxy_steps
        model = prune(base, widths) if widths != prunable_widths(base) else copy.deepcopy(base)
        model = train(model, (lo, hi), config.finetune_steps, seed)
        models.append(model)
        reports.append(GroupReport(lo, hi, budgets[g], widths, config_flops(model.config(), shape), bank))
    open_edges = [0.0, *edges[1:-1], math.inf]
    grouped = GroupedDenoiser([(open_edges[g], open_edges[g + 1], m) for g, m in enumerate(models)])
    return TDCResult(grouped, edges, difficulty, base_flops, reports, proxy_total, config.n_groups * config.finetune_steps)
