"""`fastdiff.recommend` against the shootout's numbers (bench/results/shootout.json): at every measured NFE the
recommended (solver, grid) is within 15% of the best fastdiff choice on the held-out targets, by the geometric mean of
each candidate's error over the best fastdiff error per target."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path

import pytest

import fastdiff
from fastdiff.grids import KINDS
from fastdiff.recommend import TABLE, Recommendation, recommend
from fastdiff.solvers import make_solver

RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results" / "shootout.json"


def candidate(label: str) -> tuple[str, bool] | None:
    """(solver, flow_time) of a shootout row that is a fastdiff solver with its default options, else None."""
    name, flow_time = (label.removesuffix(" (t)"), True) if label.endswith(" (t)") else (label, False)
    return (name, flow_time) if name in fastdiff.SOLVERS else None


def held_out_scores() -> dict[tuple[str, str, int], dict[Recommendation, float]]:
    """(family, kind, NFE) -> {choice: geometric mean of error / best fastdiff error per target}, over the rows a
    user reproduces with fastdiff alone (default options; not diffusers' own flow grid)."""
    rows = [r for r in json.loads(RESULTS.read_text())["results"]
            if r["library"] == "fastdiff" and r["role"] == "held-out" and r["nfe"] == r["nfe_asked"]
            and r["error"] is not None and math.isfinite(r["error"]) and r["grid"] != "diffusers"
            and candidate(r["sampler"]) is not None]
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


def test_the_table_names_real_solvers_and_grids():
    for (family, kind), entries in TABLE.items():
        assert [start for start, _ in entries] == sorted({start for start, _ in entries}) and entries[0][0] == 1
        for _, choice in entries:
            assert choice.solver in fastdiff.SOLVERS and make_solver(choice.solver).stochastic == (kind == "sde")
            assert choice.grid in KINDS and (family == "flow" or (choice.grid != "flow" and not choice.flow_time))


@pytest.mark.skipif(not RESULTS.exists(), reason="bench/results/shootout.json not generated")
def test_recommendations_are_the_measured_best():
    for (family, kind, nfe), scores in sorted(held_out_scores().items()):
        choice = recommend(nfe, stochastic=kind == "sde", flow=family == "flow")
        best = min(scores, key=scores.get)
        assert choice in scores, f"{family} {kind} NFE {nfe}: {choice} was not measured"
        assert scores[choice] <= 1.15 * scores[best], (
            f"{family} {kind} NFE {nfe}: recommended {choice} scores {scores[choice]:.2f}, "
            f"{best} scores {scores[best]:.2f}")


def test_recommend_checks_its_arguments():
    assert recommend(16) == Recommendation("srk", "logsnr", False)
    assert recommend(12, stochastic=False, flow=True).flow_time
    with pytest.raises(ValueError, match="nfe"):
        recommend(0)
    with pytest.raises(TypeError, match="flow"):
        recommend(8, flow="yes")
