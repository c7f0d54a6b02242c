"""Derive `fastdiff.recommend.TABLE` from bench/results/shootout.json and print it.

Score of a choice (solver, grid, flow_time) at one NFE: the geometric mean over the held-out targets of its error over
the best fastdiff error on that target, among the rows a user reproduces with fastdiff alone (solvers with their
default options, not diffusers' own flow grid). With a fixed grid kind the candidates and the best are those on that
grid. An entry is kept for larger NFEs while its score stays within TOLERANCE of the best score there.
tests/test_recommend.py checks the table in fastdiff/recommend.py with `scores`.

    python bench/recommend_table.py
"""

from __future__ import annotations

import json
import math
import pathlib
from collections import defaultdict

import fastdiff
from fastdiff.recommend import GRIDS, Recommendation

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "shootout.json"
TOLERANCE = 1.15  # a recommendation scores at most 15% above the best choice


def candidate(label: str) -> tuple[str, bool] | None:
    """(solver, flow_time) of a shootout row that is a fastdiff solver with its default options, else None."""
    name, flow_time = (label.removesuffix(" (t)"), True) if label.endswith(" (t)") else (label, False)
    return (name, flow_time) if name in fastdiff.SOLVERS else None


def scores(results: list[dict], grid: str | None = None) -> dict[tuple[str, str, int], dict[Recommendation, float]]:
    """(family, kind, NFE) -> {choice: score}; `grid`: only the choices on that grid kind (None: every grid)."""
    rows = [r for r in results
            if r["library"] == "fastdiff" and r["role"] == "held-out" and r["nfe"] == r["nfe_asked"]
            and r["error"] is not None and math.isfinite(r["error"]) and r["grid"] != "diffusers"
            and (grid is None or r["grid"] == grid) and candidate(r["sampler"]) is not None]
    best: dict[tuple, float] = {}
    for r in rows:
        key = (r["target"], r["kind"], r["nfe"])
        best[key] = min(best.get(key, math.inf), r["error"])
    logs = defaultdict(lambda: defaultdict(list))
    targets = defaultdict(set)
    for r in rows:
        key = ("flow" if r["target"].endswith("_flow") else "ve", r["kind"], r["nfe"])
        solver, flow_time = candidate(r["sampler"])
        ratio = max(r["error"], 1e-300) / max(best[(r["target"], r["kind"], r["nfe"])], 1e-300)
        logs[key][Recommendation(solver, r["grid"], flow_time)].append(math.log(ratio))
        targets[key].add(r["target"])
    return {key: {c: math.exp(sum(v) / len(v)) for c, v in cands.items() if len(v) == len(targets[key])}
            for key, cands in logs.items()}


def derive(by_nfe: dict[int, dict[Recommendation, float]]) -> list[tuple[int, Recommendation]]:
    """[(from NFE, choice)]: the best choice at the smallest NFE, kept while within TOLERANCE of the best."""
    entries: list[tuple[int, Recommendation]] = []
    for nfe in sorted(by_nfe):
        row = by_nfe[nfe]
        top = min(row, key=row.get)
        if not entries or row.get(entries[-1][1], math.inf) > TOLERANCE * row[top]:
            entries.append((nfe if entries else 1, top))
    return entries


def table(results: list[dict]) -> dict[tuple[str, str, str | None], list[tuple[int, Recommendation]]]:
    out = {}
    for grid in (None, *sorted({g for grids in GRIDS.values() for g in grids})):
        measured = scores(results, grid)
        for family in ("ve", "flow"):
            if grid is not None and grid not in GRIDS[family]:
                continue
            for kind in ("sde", "ode"):
                by_nfe = {nfe: s for (f, k, nfe), s in measured.items() if (f, k) == (family, kind) and s}
                if by_nfe:
                    out[(family, kind, grid)] = derive(by_nfe)
    return out


def main() -> None:
    results = json.loads(RESULTS.read_text())["results"]
    print("TABLE: dict[tuple[str, str, str | None], list[tuple[int, Recommendation]]] = {")
    def quoted(value):
        return "None" if value is None else f'"{value}"'

    for key, entries in table(results).items():
        print(f"    ({', '.join(map(quoted, key))}): [")
        for start, c in entries:
            extra = ", flow_time=True" if c.flow_time else ""
            print(f"        ({start}, R({quoted(c.solver)}, {quoted(c.grid)}{extra})),")
        print("    ],")
    print("}")


if __name__ == "__main__":
    main()
