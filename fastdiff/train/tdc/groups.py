"""Noise-level groups of TDC (docs/ALGORITHMS.md section 9): contiguous, equal-width bins in SNR (dB), and FLOPs budgets.

In EDM form x = x0 + sigma eps with data scale sigma_data, the signal-to-noise ratio is
    SNR(sigma) = sigma_data^2 / sigma^2,   SNR_dB = 10 log10(SNR) = 20 log10(sigma_data / sigma),
so equal widths in dB are equal widths in log sigma. The default range sigma in [0.002, 80] with sigma_data = 0.5
(EDM's sampling range) is SNR in [-44.1, +48.0] dB.

Edges are returned as sigmas in increasing order (group 0 = lowest noise = highest SNR).
Group g covers edges[g] <= sigma < edges[g + 1]; the last group also includes its upper edge.
"""

from __future__ import annotations

import math

import torch

from fastdiff.validation import check_number, check_positive, check_positive_int


def snr_db(sigma: float | torch.Tensor, sigma_data: float = 0.5) -> float | torch.Tensor:
    """20 log10(sigma_data / sigma)."""
    if isinstance(sigma, torch.Tensor):
        return 20.0 * torch.log10(sigma_data / sigma)
    return 20.0 * math.log10(sigma_data / sigma)


def sigma_of_snr_db(db: float, sigma_data: float = 0.5) -> float:
    """The sigma whose SNR is `db` decibels: sigma_data 10^(-db / 20)."""
    return sigma_data * 10.0 ** (-db / 20.0)


def snr_group_edges(n_groups: int, sigma_min: float = 0.002, sigma_max: float = 80.0, sigma_data: float = 0.5) -> list[float]:
    """N + 1 increasing sigma edges splitting [sigma_min, sigma_max] into N equal SNR-dB bins (the ends exact)."""
    n = check_positive_int(n_groups, "n_groups")
    lo, hi = check_positive(sigma_min, "sigma_min"), check_positive(sigma_max, "sigma_max")
    sd = check_positive(sigma_data, "sigma_data")
    if not lo < hi:
        raise ValueError(f"sigma_min must be below sigma_max, got {lo} and {hi}")
    top, bottom = snr_db(lo, sd), snr_db(hi, sd)  # high SNR at low sigma
    width = (top - bottom) / n
    inner = [sigma_of_snr_db(top - g * width, sd) for g in range(1, n)]
    return [lo, *inner, hi]


def check_edges(edges: object, name: str = "edges") -> list[float]:
    """Edges as a list of >= 2 strictly increasing non-negative numbers (inf allowed as the last)."""
    try:
        values = [float(e) for e in edges]  # type: ignore[union-attr]
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a sequence of numbers, got {type(edges).__name__}") from err
    if len(values) < 2 or any(math.isnan(v) or v < 0 for v in values):
        raise ValueError(f"{name} must hold >= 2 non-negative numbers, got {values}")
    for a, b in zip(values[:-1], values[1:], strict=True):
        if not a < b:
            raise ValueError(f"{name} must be strictly increasing, got {values}")
    return values


def group_index(sigma: torch.Tensor, edges: list[float]) -> torch.Tensor:
    """The group of each sigma (int64, same shape): g with edges[g] <= sigma < edges[g + 1], the last edge included.
    Raises ValueError if any sigma lies outside [edges[0], edges[-1]]."""
    out_of_range = (sigma < edges[0]) | (sigma > edges[-1]) | torch.isnan(sigma)
    if bool(out_of_range.any()):
        bad = sigma[out_of_range].flatten()[0].item()
        raise ValueError(f"sigma {bad!r} lies outside the groups' range [{edges[0]}, {edges[-1]}]")
    inner = torch.tensor(edges[1:-1], dtype=sigma.dtype, device=sigma.device)
    return torch.bucketize(sigma.contiguous(), inner, right=True)


def flops_budgets(n_groups: int, k: float, f_base: float) -> list[float]:
    """Budgets by difficulty rank i = 1..N (easiest first): (i/N + (N - i)/N k) F_base; rank N (hardest) is F_base."""
    n = check_positive_int(n_groups, "n_groups")
    if check_number(k, "k", 0.0, 1.0) == 0:
        raise ValueError(f"k must be in (0, 1], got {k!r}")
    f = check_positive(f_base, "f_base")
    return [(i / n + (n - i) / n * k) * f for i in range(1, n + 1)]


def budgets_by_group(difficulty: list[float], k: float, f_base: float) -> list[float]:
    """Each group's budget: groups ranked by `difficulty` (ascending, ties by index) get `flops_budgets` in that order,
    so the hardest group keeps F_base."""
    order = sorted(range(len(difficulty)), key=lambda g: (difficulty[g], g))
    ranked = flops_budgets(len(difficulty), k, f_base)
    out = [0.0] * len(difficulty)
    for rank, g in enumerate(order):
        out[g] = ranked[rank]
    return out
