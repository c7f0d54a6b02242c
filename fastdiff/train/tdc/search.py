"""Proxy search over per-layer widths under a FLOPs budget, with a memory bank of (configuration, score) pairs.

A configuration is a tuple of prunable widths (each a multiple of `granularity`, at least `min_width`, at most the
base width). `run` evaluates configurations with `score` (lower is better: held-out group loss after a short
fine-tune) and keeps every (configuration, FLOPs, score) in the bank. Round 0 scores the uniform scaling that
fills the budget plus `initial - 1` random width profiles; each later round takes the `parents` best entries
of the bank and proposes configurations near them (move `granularity`-sized steps of width from one layer to
another, then re-fill the budget), scores up to `per_round` new ones under the budget, and adds them to the bank.
Every random choice comes from one `random.Random(seed)`: the same seed and scores give the same search.

"Fill" grows layers one granularity step at a time, in a seeded random order, while the budget allows, so that
no proposal leaves budget unused that one more step could take.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fastdiff.validation import check_positive_int

Widths = tuple[int, ...]


@dataclass(frozen=True)
class Entry:
    widths: Widths
    flops: float
    score: float
    round: int


@dataclass
class SearchResult:
    best: Entry
    bank: list[Entry] = field(default_factory=list)


class WidthSearch:
    """Search state: the base widths, the budget, the FLOPs and score functions, and the bank (module docstring)."""

    def __init__(
        self, full: Sequence[int], budget: float, flops: Callable[[Widths], float], score: Callable[[Widths], float], *,
        granularity: int = 8, min_width: int | None = None, seed: int = 0,
    ):
        self.full = tuple(int(w) for w in full)
        if not self.full or any(w < 1 for w in self.full):
            raise ValueError(f"full must be a non-empty sequence of positive widths, got {full!r}")
        self.granularity = check_positive_int(granularity, "granularity")
        self.min_width = granularity if min_width is None else min_width
        self.budget = float(budget)
        self._flops_fn, self._score_fn = flops, score
        self._flops: dict[Widths, float] = {}
        self.rng = random.Random(seed)
        self.bank: list[Entry] = []
        smallest = tuple(min(self.min_width, f) for f in self.full)
        if self.flops(smallest) > self.budget:
            raise ValueError(f"budget {self.budget:.4g} FLOPs is below the smallest configuration {smallest} "
                             f"({self.flops(smallest):.4g} FLOPs)")

    def flops(self, widths: Widths) -> float:
        if widths not in self._flops:
            self._flops[widths] = float(self._flops_fn(widths))
        return self._flops[widths]

    def _snap(self, w: float, layer: int) -> int:
        g, full = self.granularity, self.full[layer]
        return min(full, max(min(self.min_width, full), int(w) // g * g))

    def _step(self, widths: Widths, layer: int, sign: int) -> Widths | None:
        new = list(widths)
        new[layer] = self._snap(widths[layer] + sign * self.granularity, layer) if sign < 0 else min(
            self.full[layer], (widths[layer] // self.granularity + 1) * self.granularity)
        return None if new[layer] == widths[layer] else tuple(new)

    def fill(self, widths: Widths) -> Widths:
        """Grow layers (seeded order) by one step at a time while the result stays within budget."""
        grown = True
        while grown:
            grown = False
            order = list(range(len(widths)))
            self.rng.shuffle(order)
            for layer in order:
                new = self._step(widths, layer, +1)
                if new is not None and self.flops(new) <= self.budget:
                    widths, grown = new, True
        return widths

    def _shrink_to_budget(self, ratios: Sequence[float]) -> Widths:
        """The largest common scale of `ratios * full` that fits the budget (bisection), snapped, then filled."""
        lo, hi = 0.0, 1.0 / max(min(ratios), 1e-9)
        for _ in range(24):
            mid = (lo + hi) / 2
            if self.flops(self._scaled(ratios, mid)) <= self.budget:
                lo = mid
            else:
                hi = mid
        return self.fill(self._scaled(ratios, lo))

    def _scaled(self, ratios: Sequence[float], scale: float) -> Widths:
        return tuple(self._snap(min(1.0, r * scale) * f, i) for i, (r, f) in enumerate(zip(ratios, self.full, strict=True)))

    def initial(self, count: int) -> list[Widths]:
        proposals = [self._shrink_to_budget([1.0] * len(self.full))]
        while len(proposals) < count:
            proposals.append(self._shrink_to_budget([self.rng.uniform(0.25, 1.0) for _ in self.full]))
        return proposals

    def neighbours(self, widths: Widths, count: int) -> list[Widths]:
        """Up to `count` distinct configurations: 1-3 steps moved from a random layer to others, then filled."""
        out: list[Widths] = []
        for _ in range(20 * count):
            if len(out) == count or len(widths) < 2:
                break
            new: Widths | None = widths
            donor = self.rng.randrange(len(widths))
            for _ in range(self.rng.randint(1, 3)):
                new = self._step(new, donor, -1) if new is not None else None
            if new is None:
                continue
            receiver = self.rng.choice([layer for layer in range(len(widths)) if layer != donor])
            grown = self._step(new, receiver, +1)
            new = self.fill(grown if grown is not None and self.flops(grown) <= self.budget else new)
            if new not in out and new != widths:
                out.append(new)
        return out

    def _evaluate(self, proposals: list[Widths], limit: int, round_index: int) -> None:
        seen = {e.widths for e in self.bank}
        for widths in proposals:
            if limit == 0:
                break
            if widths in seen or self.flops(widths) > self.budget:
                continue
            seen.add(widths)
            self.bank.append(Entry(widths, self.flops(widths), float(self._score_fn(widths)), round_index))
            limit -= 1

    def best(self, n: int = 1) -> list[Entry]:
        return sorted(self.bank, key=lambda e: (e.score, -e.flops, e.widths))[:n]

    def run(self, *, rounds: int = 3, initial: int = 4, per_round: int = 4, parents: int = 2) -> SearchResult:
        self._evaluate(self.initial(initial), initial, 0)
        for r in range(1, rounds + 1):
            proposals = [w for parent in self.best(parents) for w in self.neighbours(parent.widths, per_round)]
            self._evaluate(proposals, per_round, r)
        return SearchResult(self.best()[0], list(self.bank))
