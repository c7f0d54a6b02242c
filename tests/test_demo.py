"""`python -m fastdiff demo`: each solver family on its recommended grid, sample panels at a budget where the
recommended samplers work, and a message naming every file written."""

import pytest

from fastdiff import demo
from fastdiff.__main__ import main


def test_solvers_run_on_their_family_grid_and_the_files_are_announced(tmp_path, capsys):
    rows = demo.run_demo((5, 20), n_samples=200, out_dir=tmp_path, solvers=("euler", "srk"), progress=False)
    assert {(r.solver, r.grid) for r in rows} == {("euler", "logsnr"), ("srk", "logsnr")}
    printed = capsys.readouterr().out
    for name in ("demo_error_vs_nfe.png", "demo_samples.png"):
        assert (tmp_path / name).is_file()
        assert str(tmp_path / name) in printed
    assert any(line.startswith("srk") and "logsnr" in line for line in printed.splitlines())  # the table names the grid


def test_one_grid_for_all_on_request(tmp_path):
    rows = demo.run_demo((5,), n_samples=100, grid_kind="karras", out_dir=tmp_path, solvers=("srk",), progress=False)
    assert [r.grid for r in rows] == ["karras"]


@pytest.mark.parametrize("budgets, shown", [([5, 10, 20, 50], 20), ([5, 10], 10), ([50, 100], 50), ([5, 30], 5)])
def test_sample_panels_show_nfe_20_or_the_nearest_below(budgets, shown):
    assert demo.samples_budget(budgets) == shown


def test_cli_defaults_to_recommended_grids(tmp_path, capsys):
    assert main(["demo", "--samples", "100", "--nfe", "5", "--out", str(tmp_path), "--no-progress"]) == 0
    assert "each solver family's recommended grid" in capsys.readouterr().out
