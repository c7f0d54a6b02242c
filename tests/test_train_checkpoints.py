"""fastdiff.train never loses or hides work: no silent overwrites, divergence stops the run, unusable checkpoints are
named with what is wrong, resume applies explicit options and says so, a failed save leaves the previous file; the
same for `python -m fastdiff tdc` and the grouped-model files."""

from __future__ import annotations

import argparse
import math
import re

import pytest
import torch

from fastdiff.models import GroupedDenoiser
from fastdiff.train import (
    CheckpointError,
    DivergenceError,
    MixtureData,
    TensorData,
    TrainConfig,
    Trainer,
    load_checkpoint,
    toy_mixture,
)
from fastdiff.train.cli import add_subcommand as add_train
from fastdiff.train.networks import make_denoiser
from fastdiff.train.tdc import load_grouped, save_grouped
from fastdiff.train.tdc.cli import add_subcommand as add_tdc

DATA = MixtureData(toy_mixture())


@pytest.fixture(autouse=True)
def _in_tmp_path(tmp_path, monkeypatch):
    """Run in the test's folder, so that a default output folder can never land in the repository."""
    monkeypatch.chdir(tmp_path)


def _trainer(steps: int = 3, lr: float = 1e-2, loss: str = "dsm") -> Trainer:
    torch.manual_seed(0)
    config = TrainConfig(steps=steps, batch_size=8, lr=lr, loss=loss, ema_decay=0.9, seed=1)
    return Trainer(make_denoiser("mlp", dim=2, widths=(16, 16), emb_dim=8), DATA, config)


def _checkpoint(path, steps: int = 2, **options):
    trainer = _trainer(steps, **options)
    trainer.train(progress=False)
    trainer.save(path)
    return trainer


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers(dest="command")
    add_train(commands)
    add_tdc(commands)
    args = parser.parse_args(argv)
    return args.run(args)


QUICK = ["--batch", "8", "--samples", "4", "--no-progress"]


def _files(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ----------------------------------------------------------------------------------------------- no silent overwrite
def test_cli_new_run_refuses_a_folder_with_another_runs_files_unless_overwrite(tmp_path):
    _checkpoint(tmp_path / "checkpoint.pt")
    before = _files(tmp_path)
    with pytest.raises(SystemExit, match=r"already holds checkpoint\.pt.*--overwrite"):
        _run(["train", "--steps", "1", "--out", str(tmp_path), *QUICK])
    assert _files(tmp_path) == before
    assert _run(["train", "--steps", "1", "--out", str(tmp_path), "--overwrite", *QUICK]) == 0
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 1


def test_cli_resume_writes_to_the_checkpoints_folder_and_refuses_another_runs_folder(tmp_path):
    run, other = tmp_path / "run", tmp_path / "other"
    _checkpoint(run / "checkpoint.pt")
    _checkpoint(other / "checkpoint.pt", steps=1)
    before = _files(other)
    with pytest.raises(SystemExit, match="other.*already holds checkpoint.pt"):
        _run(["train", "--resume", str(run / "checkpoint.pt"), "--steps", "3", "--out", str(other), *QUICK])
    assert _files(other) == before
    assert _run(["train", "--resume", str(run / "checkpoint.pt"), "--steps", "3", *QUICK]) == 0  # default: its folder
    assert load_checkpoint(run / "checkpoint.pt")["step"] == 3 and (run / "losses.csv").exists()
    assert _files(other) == before


def test_trainer_save_replaces_only_its_own_files_unless_overwrite(tmp_path):
    path = tmp_path / "ckpt.pt"
    first = _checkpoint(path)
    first.save(path)  # its own file
    other = _trainer()
    with pytest.raises(FileExistsError, match=r"ckpt\.pt.*overwrite=True"):
        other.save(path)
    assert load_checkpoint(path)["step"] == 2
    other.save(path, overwrite=True)
    assert load_checkpoint(path)["step"] == 0
    resumed = Trainer.resume(path, DATA, steps=1)
    resumed.train(progress=False)
    resumed.save(path)  # the file it was resumed from
    assert load_checkpoint(path)["step"] == 1


# ----------------------------------------------------------------------------------------------- divergence
def test_diverging_trainer_stops_naming_the_step_and_keeps_the_last_good_state(tmp_path):
    trainer = _trainer(steps=20, lr=1e6)
    with pytest.raises(DivergenceError, match=r"diverged at step \d+: the (loss|gradient)") as info:
        trainer.train(progress=False)
    step = info.value.step
    assert info.value.weights_intact and trainer.step == step == len(trainer.log) and step >= 1
    assert all(math.isfinite(row["loss"]) for row in trainer.log)
    assert all(bool(torch.isfinite(p).all()) for p in trainer.model.parameters())
    trainer.save(tmp_path / "good.pt")
    assert load_checkpoint(tmp_path / "good.pt")["step"] == step


def test_cli_divergence_stops_and_keeps_the_last_good_checkpoint(tmp_path):
    with pytest.raises(SystemExit, match=r"diverged at step 1\b.*lr 10000.*last good checkpoint .*step 1"):
        _run(["train", "--steps", "20", "--lr", "1e4", "--checkpoint-every", "1", "--out", str(tmp_path), *QUICK])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert load_checkpoint(tmp_path / "checkpoint.pt")["step"] == 1  # finite weights: it loads
    with pytest.raises(SystemExit, match="diverged at step.*no checkpoint of this run"):
        _run(["train", "--steps", "20", "--lr", "1e4", "--out", str(tmp_path / "fresh"), *QUICK])
    assert not (tmp_path / "fresh").exists()


def test_save_refuses_nan_weights(tmp_path):
    path = tmp_path / "ckpt.pt"
    trainer = _checkpoint(path)
    before = path.read_bytes()
    with torch.no_grad():
        trainer.model.net.out.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"not saving .*ckpt\.pt.*net\.out\.weight.*NaN"):
        trainer.save(path)
    assert path.read_bytes() == before


# ----------------------------------------------------------------------------------------------- unusable checkpoints
class _Foreign:
    pass


def _state(tmp_path):
    _checkpoint(tmp_path / "good.pt")
    return torch.load(tmp_path / "good.pt", weights_only=True)


def _write_case(tmp_path, case: str):
    path = tmp_path / f"{case}.pt"
    if case in ("empty", "truncated", "garbage"):
        good = (tmp_path / "good.pt")
        _checkpoint(good)
        data = good.read_bytes()
        path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"not a checkpoint at all"}[case])
        return path
    state = _state(tmp_path)
    if case == "foreign_object":
        obj = {"model": _Foreign()}
    elif case == "list":
        obj = [1, 2, 3]
    elif case == "bare_state_dict":
        obj = state["model"]
    elif case == "missing_keys":
        obj = {k: v for k, v in state.items() if k not in ("optimizer", "rng")}
    elif case == "nan_weights":
        state["model"]["net.out.weight"][0, 0] = float("nan")
        obj = state
    elif case == "nan_optimizer":
        next(iter(state["optimizer"]["state"].values()))["exp_avg"].fill_(float("inf"))
        obj = state
    elif case == "shape_mismatch":
        state["denoiser"] = {**state["denoiser"], "widths": (32, 16)}
        obj = state
    elif case == "bad_config":
        state["config"] = {**state["config"], "loss": "l1"}
        obj = state
    torch.save(obj, path)
    return path


CASES = {
    "empty": r"corrupt or truncated \(0 bytes; torch\.load: EOFError",
    "truncated": r"corrupt or truncated \(\d+ bytes; torch\.load: \w+",
    "garbage": r"corrupt or truncated \(23 bytes; torch\.load: \w+",
    "foreign_object": r"not a fastdiff checkpoint: it holds Python objects other than tensors .*_Foreign",
    "list": r"not a fastdiff training checkpoint: it holds a list; expected a dict with keys",
    "bare_state_dict": r"not a fastdiff training checkpoint: it is a bare state_dict \(keys 'net\.",
    "missing_keys": r"incomplete: missing keys \['optimizer', 'rng'\]",
    "nan_weights": r"'model' weights: parameter 'net\.out\.weight' holds NaN or infinite values",
    "nan_optimizer": r"optimizer state '0\.exp_avg' holds NaN or infinite values",
    "shape_mismatch": r"'model' weights: parameter 'net\.layers\.0\.weight' has shape \(16, 2\), but the architecture "
                      r"\(kind='mlp', .*widths=\(32, 16\).*\) needs \(32, 2\)",
    "bad_config": r"'config' .* is not a valid TrainConfig \(loss must be one of \('dsm', 'cdm'\), got 'l1'\)",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_unusable_checkpoints_name_the_file_and_the_problem(tmp_path, case):
    path = _write_case(tmp_path, case)
    with pytest.raises(CheckpointError, match=rf"^checkpoint '{re.escape(str(path))}'.*" + CASES[case]) as info:
        Trainer.resume(path, DATA)
    assert "weights_only=False" not in str(info.value)
    with pytest.raises(SystemExit, match=r"^train: --resume: checkpoint '.*" + CASES[case]):
        _run(["train", "--resume", str(path), "--steps", "5", *QUICK])
    assert sorted(p.name for p in tmp_path.iterdir()) <= ["good.pt", f"{case}.pt"]  # nothing written


def test_checkpoints_without_a_format_entry_still_load(tmp_path):
    state = _state(tmp_path)
    del state["format"]
    torch.save(state, tmp_path / "older.pt")
    assert Trainer.resume(tmp_path / "older.pt", DATA).step == 2


def test_missing_checkpoint_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint '.*nope\.pt' does not exist"):
        Trainer.resume(tmp_path / "nope.pt", DATA)


def _digits_checkpoint(path) -> None:
    torch.manual_seed(0)
    config = TrainConfig(steps=1, batch_size=4, lr=1e-3, seed=0)
    trainer = Trainer(make_denoiser("unet", in_channels=1, widths=(8,), emb_dim=8),
                      TensorData(torch.zeros(6, 1, 8, 8)), config)
    trainer.train(progress=False)
    trainer.save(path)


def test_resume_on_the_wrong_preset_names_the_preset_and_the_parameter(tmp_path):
    path = tmp_path / "checkpoint.pt"
    _digits_checkpoint(path)
    with pytest.raises(SystemExit, match=r"--preset toy does not fit .*unet with in_channels=1.*got \(2,\).*--preset digits"):
        _run(["train", "--resume", str(path), "--preset", "toy", "--steps", "2", *QUICK])
    with pytest.raises(ValueError, match=r"checkpoint '.*': data draws samples of shape \(2,\), .*in_channels=1"):
        Trainer.resume(path, DATA)
    assert _run(["train", "--resume", str(path), "--steps", "2", *QUICK]) == 0  # the preset follows the checkpoint
    assert load_checkpoint(path)["step"] == 2


def test_trainer_refuses_data_of_the_wrong_shape():
    with pytest.raises(ValueError, match=r"data draws samples of shape \(2,\).*unet with in_channels=1"):
        Trainer(make_denoiser("unet", in_channels=1, widths=(8,), emb_dim=8), DATA, TrainConfig())


# ----------------------------------------------------------------------------------------------- --steps and options
@pytest.mark.parametrize("steps", [None, "2", "1"])
def test_resume_with_nothing_to_train_says_so_and_writes_nothing(tmp_path, capsys, steps):
    path = tmp_path / "checkpoint.pt"
    _checkpoint(path, steps=2)
    before = _files(tmp_path)
    argv = ["train", "--resume", str(path), *QUICK] + (["--steps", steps] if steps else [])
    assert _run(argv) == 0
    out = capsys.readouterr().out
    assert "nothing to train" in out and "already at step 2" in out and "Nothing was written" in out
    assert "wrote" not in out
    assert _files(tmp_path) == before


def test_trainer_resume_refuses_steps_below_the_checkpoint(tmp_path):
    _checkpoint(tmp_path / "c.pt", steps=3)
    with pytest.raises(ValueError, match=r"steps must be >= the step 3 of checkpoint '.*c\.pt'.*got 1"):
        Trainer.resume(tmp_path / "c.pt", DATA, steps=1)


def test_cli_resume_applies_explicit_options_and_says_so(tmp_path, capsys):
    path = tmp_path / "checkpoint.pt"
    _checkpoint(path, steps=2, loss="cdm")
    capsys.readouterr()
    assert _run(["train", "--resume", str(path), "--steps", "3", "--lr", "1e-4", "--loss", "dsm", *QUICK]) == 0
    out = capsys.readouterr().out
    assert "--lr 0.0001 (the checkpoint's: 0.01)" in out and "--loss 'dsm' (the checkpoint's: 'cdm')" in out
    state = load_checkpoint(path)
    assert state["step"] == 3 and state["config"]["lr"] == 1e-4 and state["config"]["loss"] == "dsm"
    assert state["config"]["batch_size"] == 8 and state["config"]["ema_decay"] == 0.9  # not given: kept
    assert state["optimizer"]["param_groups"][0]["lr"] == 1e-4


def test_trainer_resume_applies_changes_and_records_them(tmp_path):
    _checkpoint(tmp_path / "c.pt", steps=2)
    trainer = Trainer.resume(tmp_path / "c.pt", DATA, steps=4, lr=1e-3, seed=None)
    assert trainer.changes == {"lr": (1e-2, 1e-3)}
    assert trainer.config.lr == 1e-3 and trainer.optimizer.param_groups[0]["lr"] == 1e-3 and trainer.config.seed == 1
    with pytest.raises(TypeError, match=r"unknown TrainConfig fields \['learning_rate'\]"):
        Trainer.resume(tmp_path / "c.pt", DATA, learning_rate=1e-3)


def test_cli_keeps_checkpoint_and_log_when_sampling_fails(tmp_path, monkeypatch):
    import fastdiff.train.cli as cli

    def failing_samples(*args, **kwargs):
        raise RuntimeError("sampling failed")

    monkeypatch.setattr(cli, "_samples", failing_samples)
    with pytest.raises(RuntimeError, match="sampling failed"):
        _run(["train", "--steps", "2", "--out", str(tmp_path / "run"), *QUICK])
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["checkpoint.pt", "losses.csv"]


# ----------------------------------------------------------------------------------------------- failed saves
def _failing_save(obj, f, *args, **kwargs):
    with open(f, "wb") as handle:
        handle.write(b"half a checkpoint")
    raise OSError(28, "No space left on device")


def test_failed_save_removes_its_temporary_file_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    trainer = _checkpoint(path)
    before = path.read_bytes()
    trainer.train(3, progress=False)
    monkeypatch.setattr(torch, "save", _failing_save)
    with pytest.raises(OSError, match=r"could not write the checkpoint '.*ckpt\.pt' \(No space left on device\)"):
        trainer.save(path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
    assert path.read_bytes() == before and load_checkpoint(path)["step"] == 2


# ----------------------------------------------------------------------------------------------- TDC files
def _grouped() -> GroupedDenoiser:
    torch.manual_seed(0)
    return GroupedDenoiser([(0.002, 1.0, make_denoiser("mlp", dim=2, widths=(8,), emb_dim=4)),
                            (1.0, 80.0, make_denoiser("mlp", dim=2, widths=(4,), emb_dim=4))])


def test_save_grouped_refuses_to_overwrite_and_cleans_up_a_failed_write(tmp_path, monkeypatch):
    path = tmp_path / "grouped.pt"
    save_grouped(_grouped(), path)
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match=r"grouped\.pt' already exists; pass overwrite=True"):
        save_grouped(_grouped(), path)
    monkeypatch.setattr(torch, "save", _failing_save)
    with pytest.raises(OSError, match="could not write"):
        save_grouped(_grouped(), path, overwrite=True)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grouped.pt"] and path.read_bytes() == before
    save_grouped(_grouped(), path, overwrite=True)
    save_grouped(_grouped(), tmp_path / "new" / "folder" / "grouped.pt")  # a missing folder is created
    assert next(load_grouped(path, map_location="meta").parameters()).device.type == "meta"
    loaded = load_grouped(path)
    x = torch.randn(3, 2)
    torch.testing.assert_close(loaded(x, torch.tensor([0.01, 0.5, 10.0])), _grouped()(x, torch.tensor([0.01, 0.5, 10.0])))


def test_load_grouped_names_the_file_and_the_problem(tmp_path):
    path = tmp_path / "grouped.pt"
    save_grouped(_grouped(), path)
    saved = torch.load(path, weights_only=True)
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"grouped-model file '.*empty\.pt' is corrupt or truncated"):
        load_grouped(tmp_path / "empty.pt")
    _checkpoint(tmp_path / "train.pt")
    with pytest.raises(CheckpointError, match=r"'.*train\.pt' is not a TDC grouped-model file.*Trainer\.resume"):
        load_grouped(tmp_path / "train.pt")
    saved["groups"][1]["config"] = {**saved["groups"][1]["config"], "widths": (8,)}
    torch.save(saved, tmp_path / "shape.pt")
    with pytest.raises(CheckpointError, match=r"group 1's weights: parameter 'net\.layers\.0\.weight' has shape \(4, 2\), "
                                              r"but the architecture \(.*widths=\(8,\).*\) needs \(8, 2\)"):
        load_grouped(tmp_path / "shape.pt")
    del saved["groups"][0]["state_dict"]
    torch.save(saved, tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match=r"group 0 is missing keys \['state_dict'\]"):
        load_grouped(tmp_path / "missing.pt")


TDC_QUICK = ["tdc", "--base-steps", "1", "--finetune-steps", "1", "--proxy-steps", "1", "--rounds", "0", "--groups", "2",
             "--no-progress"]


def test_tdc_cli_refuses_an_existing_out_file_before_training(tmp_path, monkeypatch):
    import fastdiff.train.tdc.run as tdc_run

    out = tmp_path / "grouped.pt"
    out.write_bytes(b"someone else's file")

    def no_training(*args, **kwargs):
        raise AssertionError("trained before checking --out")

    monkeypatch.setattr(tdc_run, "run_preset", no_training)
    with pytest.raises(SystemExit, match=r"--out '.*grouped\.pt' already exists; pass --overwrite"):
        _run([*TDC_QUICK, "--out", str(out)])
    with pytest.raises(SystemExit, match="is a folder"):
        _run([*TDC_QUICK, "--out", str(tmp_path)])
    assert out.read_bytes() == b"someone else's file"


def test_tdc_cli_stops_on_divergence_and_writes_nothing(tmp_path, monkeypatch):
    import fastdiff.train.tdc.run as tdc_run

    def diverging(*args, **kwargs):
        raise DivergenceError(3, "the loss is nan", 1e-3, True)

    monkeypatch.setattr(tdc_run, "run_preset", diverging)
    with pytest.raises(SystemExit, match=r"diverged at its step 3: the loss is nan .*nothing was written"):
        _run([*TDC_QUICK, "--out", str(tmp_path / "grouped.pt")])
    assert not (tmp_path / "grouped.pt").exists()
