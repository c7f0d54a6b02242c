"""`fastdiff.recommend` against the shootout's numbers (bench/results/shootout.json): at every measured NFE the
recommended (solver, grid) is within 15% of the best fastdiff choice on the held-out targets, by the geometric mean of
each candidate's error over the best fastdiff error per target (bench/recommend_table.py), with the grid free and with
each grid kind fixed."""

from __future__ import annotations

import json
import pathlib
import sys

import pytest

import fastdiff
from fastdiff.grids import KINDS
from fastdiff.recommend import GRIDS, TABLE, Recommendation, recommend
from fastdiff.solvers import make_solver

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))

import recommend_table  # noqa: E402

RESULTS = recommend_table.RESULTS


def test_the_table_names_real_solvers_and_grids():
    assert set(TABLE) == {(f, k, g) for f in GRIDS for k in ("sde", "ode") for g in (None, *GRIDS[f])}
    for (family, kind, grid), entries in TABLE.items():
        assert [start for start, _ in entries] == sorted({start for start, _ in entries}) and entries[0][0] == 1
        for _, choice in entries:
            assert choice.solver in fastdiff.SOLVERS and make_solver(choice.solver).stochastic == (kind == "sde")
            assert choice.grid in KINDS and (family == "flow" or (choice.grid != "flow" and not choice.flow_time))
            assert grid is None or choice.grid == grid


@pytest.mark.skipif(not RESULTS.exists(), reason="bench/results/shootout.json not generated")
@pytest.mark.parametrize("grid", [None, "karras", "logsnr", "flow"])
def test_recommendations_are_the_measured_best(grid):
    results = json.loads(RESULTS.read_text())["results"]
    checked = 0
    for (family, kind, nfe), scores in sorted(recommend_table.scores(results, grid).items()):
        if grid is not None and grid not in GRIDS[family]:
            continue
        choice = recommend(nfe, stochastic=kind == "sde", flow=family == "flow", grid=grid)
        best = min(scores, key=scores.get)
        assert choice in scores, f"{family} {kind} NFE {nfe} grid {grid}: {choice} was not measured"
        assert scores[choice] <= recommend_table.TOLERANCE * scores[best], (
            f"{family} {kind} NFE {nfe} grid {grid}: recommended {choice} scores {scores[choice]:.2f}, "
            f"{best} scores {scores[best]:.2f}")
        checked += 1
    assert checked >= 18  # every measured NFE of both kinds for at least one family


def test_the_printed_table_is_the_table():
    """bench/recommend_table.py derives the table in fastdiff/recommend.py from the json."""
    if not RESULTS.exists():
        pytest.skip("bench/results/shootout.json not generated")
    assert recommend_table.table(json.loads(RESULTS.read_text())["results"]) == TABLE


def test_recommend_checks_its_arguments():
    assert recommend(16) == Recommendation("srk", "logsnr", False)
    assert recommend(12, stochastic=False, flow=True).flow_time
    with pytest.raises(ValueError, match="nfe"):
        recommend(0)
    with pytest.raises(TypeError, match="flow"):
        recommend(8, flow="yes")
    with pytest.raises(ValueError, match="grid must be None or one of"):
        recommend(8, grid="flow")  # a VE model has no flow grid
    assert recommend(8, flow=True, grid="flow").grid == "flow"
