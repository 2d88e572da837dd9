"""`bayesrm train`: --resume continues to the weights of an uninterrupted run; existing outputs are never silently replaced."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from bayesrm.cli.main import main


@pytest.fixture
def data(tmp_path, toy_pairs) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in toy_pairs))
    return path


def train_args(data: Path, backbone: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--backbone", str(backbone), "--out", str(out), "--lora-r", "2",
            "--max-length", "24", "--max-steps", "6", "--save-strategy", "steps", "--save-steps", "3",
            "--per-device-train-batch-size", "8", "--learning-rate", "0.02", "--use-cpu", "true",
            "--test-fraction", "0.25", "--logging-steps", "3", *extra]


def weights(out: Path) -> dict:
    return load_file(str(out / "model" / "model.safetensors"))


def interrupt_after_first_checkpoint(out: Path) -> None:
    """What a run killed between its step-3 and step-6 checkpoints leaves behind."""
    shutil.rmtree(out / "model")
    shutil.rmtree(out / "checkpoints" / "checkpoint-6")
    for name in ("metrics.json", "reliability.png"):
        (out / name).unlink()


def test_cli_resume_matches_uninterrupted_and_refuses_silent_overwrites(tmp_path, data, tiny_bert_dir, capsys):
    """Regression: there was no --resume; a rerun started from step 0 and replaced model/ without a word."""
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(train_args(data, tiny_bert_dir, full)) == 0
    assert main(train_args(data, tiny_bert_dir, part)) == 0
    for ckpt in (part / "checkpoints").glob("checkpoint-*"):  # resumable state is safetensors + JSON, never a pickle
        assert not [p.name for p in ckpt.iterdir() if p.suffix in {".pt", ".pth", ".bin", ".pkl"}], ckpt
    interrupt_after_first_checkpoint(part)

    capsys.readouterr()
    assert main(train_args(data, tiny_bert_dir, part)) == 2  # neither --resume nor --overwrite
    assert "already holds this train run; pass --resume" in capsys.readouterr().err
    assert main(train_args(data, tiny_bert_dir, part, "--learning-rate", "0.5", "--resume")) == 2
    assert "other settings (changed: training.learning_rate)" in capsys.readouterr().err

    first = (part / "checkpoints" / "checkpoint-3" / "model.safetensors").stat().st_mtime_ns
    assert main(train_args(data, tiny_bert_dir, part, "--resume")) == 0
    assert "resuming from the last complete checkpoint" in capsys.readouterr().out
    records = [json.loads(line) for line in (part / "checkpoints" / "train_log.jsonl").read_text().splitlines()]
    logged = [r["step"] for r in records if "loss" in r]
    assert logged == sorted(logged) and len(logged) == len(set(logged))  # redone steps are logged once
    assert (part / "checkpoints" / "checkpoint-3" / "model.safetensors").stat().st_mtime_ns == first  # steps 1-3 not redone
    a, b = weights(full), weights(part)
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() <= 1e-6 for k in a)

    assert main(train_args(data, tiny_bert_dir, part, "--learning-rate", "0.5", "--overwrite")) == 0
    assert any((weights(full)[k] - weights(part)[k]).abs().max() > 1e-4 for k in a)


def test_resume_from_checkpoint_in_config_is_honoured(tmp_path, data, tiny_bert_dir, capsys):
    """Regression: `resume_from_checkpoint` in --config was silently ignored."""
    full, part = tmp_path / "full", tmp_path / "part"
    assert main(train_args(data, tiny_bert_dir, full)) == 0
    assert main(train_args(data, tiny_bert_dir, part)) == 0
    interrupt_after_first_checkpoint(part)
    config = tmp_path / "resume.yaml"
    config.write_text(f"resume_from_checkpoint: {part / 'checkpoints' / 'checkpoint-3'}\n")
    first = (part / "checkpoints" / "checkpoint-3" / "model.safetensors").stat().st_mtime_ns
    assert main(["train", "--config", str(config), *train_args(data, tiny_bert_dir, part)[1:]]) == 0
    assert f"resuming from {part / 'checkpoints' / 'checkpoint-3'}" in capsys.readouterr().out
    assert (part / "checkpoints" / "checkpoint-3" / "model.safetensors").stat().st_mtime_ns == first
    a, b = weights(full), weights(part)
    assert all((a[k] - b[k]).abs().max() <= 1e-6 for k in a)


def test_foreign_output_directory_is_left_alone(tmp_path, data, tiny_bert_dir, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "results.csv").write_text("keep me")
    assert main(train_args(data, tiny_bert_dir, out)) == 2
    assert "not empty and holds no stages.json" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["results.csv"]


def test_pickled_trainer_state_is_refused(tmp_path, data, tiny_bert_dir, capsys):
    """A checkpoint carrying transformers' pickle optimizer.pt instead of bayesrm's files is never unpickled."""
    out = tmp_path / "run"
    assert main(train_args(data, tiny_bert_dir, out)) == 0
    interrupt_after_first_checkpoint(out)
    ckpt = out / "checkpoints" / "checkpoint-3"
    (ckpt / "optimizer.safetensors").unlink()
    (ckpt / "optimizer.pt").write_bytes(pickle.dumps({"state": {}, "param_groups": []}))
    capsys.readouterr()
    config = tmp_path / "resume.yaml"
    config.write_text(f"resume_from_checkpoint: {ckpt}\n")
    assert main(["train", "--config", str(config), *train_args(data, tiny_bert_dir, out)[1:]]) == 2
    assert "holds pickle files ['optimizer.pt']; bayesrm never unpickles" in capsys.readouterr().err
