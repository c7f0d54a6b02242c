"""TDC, two-stage divide-and-conquer (docs/ALGORITHMS.md section 9): one base model trained on all noise levels, then per
SNR group a copy pruned to a FLOPs budget by a proxy width search and fine-tuned on that group's noise levels only,
sampled through `fastdiff.models.GroupedDenoiser`.

    from fastdiff.train.tdc import TDCConfig, divide_and_conquer
    result = divide_and_conquer(base, train_x0, heldout_x0, trainer, TDCConfig(n_groups=4, k=0.3))
    samples = fastdiff.sample(result.grouped, x, sigmas, "heun")
"""

from fastdiff.train.tdc.checkpoint import load_grouped, save_grouped
from fastdiff.train.tdc.difficulty import EmpiricalDenoiser, GroupLoss, group_losses
from fastdiff.train.tdc.flops import config_flops, denoiser_flops, sampling_flops
from fastdiff.train.tdc.groups import budgets_by_group, flops_budgets, group_index, snr_db, snr_group_edges
from fastdiff.train.tdc.pipeline import TDCConfig, TDCResult, divide_and_conquer
from fastdiff.train.tdc.prune import prunable_widths, prune, unit_importance
from fastdiff.train.tdc.search import WidthSearch

__all__ = [
    "EmpiricalDenoiser", "GroupLoss", "TDCConfig", "TDCResult", "WidthSearch", "budgets_by_group", "config_flops",
    "denoiser_flops", "divide_and_conquer", "flops_budgets", "group_index", "group_losses", "load_grouped", "prunable_widths",
    "prune", "sampling_flops", "save_grouped", "snr_db", "snr_group_edges", "unit_importance",
]
