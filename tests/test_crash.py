"""kill -9 at a seeded random point of each long job; the rerun (or --resume) ends exactly like an uninterrupted run.

Each job runs in a subprocess (tests/scripts/crash_run.py) that SIGKILLs itself just before its
K-th durable write (os.replace / os.fsync), K drawn by a seeded RNG from the writes an
uninterrupted run makes. After the kill the job is rerun to the end and compared with the
uninterrupted reference; every visible file it left must be whole.

CI runs one trial per job. Longer local mode: ``BAYESRM_CRASH_TRIALS=20 BAYESRM_CRASH_SEED=7
pytest tests/test_crash.py`` (each trial is one kill and one rerun).
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bayesrm.models.checkpoint import is_checkpoint_dir, load_checkpoint

TRIALS = int(os.environ.get("BAYESRM_CRASH_TRIALS", "1"))
SEED = int(os.environ.get("BAYESRM_CRASH_SEED", "0"))
RUNNER = Path(__file__).parent / "scripts" / "crash_run.py"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
       "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")])}


def run(args: list[str], tmp: Path, kill: str = "0", cwd: Path | None = None) -> tuple[int, tuple[int, int]]:
    """(return code, (durable writes, fsyncs) made) of one `bayesrm` run, killed at ``kill`` (0: never)."""
    count = tmp / "count.txt"
    count.write_text("0 0")
    proc = subprocess.run([sys.executable, str(RUNNER), kill, str(count), "--", *args], env=ENV, cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    if kill == "0" and proc.returncode != 0:
        raise AssertionError(f"bayesrm {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    a, f = count.read_text().split()
    return proc.returncode, (int(a), int(f))


def kill_points(total: int, salt: str) -> list[int]:
    rng = random.Random(f"{SEED}:{salt}")
    return [rng.randint(1, total) for _ in range(TRIALS)]


def assert_whole(directory: Path) -> None:
    """Every visible file parses (JSON, JSONL ending in a newline, safetensors) and every checkpoint loads."""
    for path in directory.rglob("*"):
        if any(part.startswith(".") for part in path.relative_to(directory).parts) or not path.is_file():
            continue  # staging / temporary names of atomic writes
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".jsonl":
            text = path.read_text()
            assert not text or text.endswith("\n"), f"{path}: torn last line"
            [json.loads(line) for line in text.splitlines() if line.strip()]
        elif path.suffix == ".safetensors":
            load_file(str(path))
        if path.name == "config.json" and is_checkpoint_dir(path.parent) and (path.parent / "model.safetensors").exists():
            load_checkpoint(path.parent)


def same_tensors(a: Path, b: Path, atol: float = 1e-6) -> None:
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys(), (a, b)
    for k in x:
        assert torch.allclose(x[k].double(), y[k].double(), atol=atol, rtol=0), (a, k)


# ---- train with checkpoints --------------------------------------------------------------------
@pytest.fixture
def pairs_file(tmp_path, toy_pairs) -> Path:
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in toy_pairs))
    return path


def train_args(data: Path, backbone: Path, out: Path) -> list[str]:
    return ["train", "--data", str(data), "--backbone", str(backbone), "--out", str(out), "--lora-r", "2", "--max-length", "24",
            "--max-steps", "6", "--save-strategy", "steps", "--save-steps", "2", "--per-device-train-batch-size", "8",
            "--learning-rate", "0.02", "--use-cpu", "true", "--test-fraction", "0.25", "--logging-steps", "2"]


def test_train_killed_then_resumed_matches_uninterrupted(tmp_path, pairs_file, tiny_bert_dir):
    _, (total, _) = run(train_args(pairs_file, tiny_bert_dir, tmp_path / "ref"), tmp_path)
    for trial, k in enumerate(kill_points(total, "train")):
        out = tmp_path / f"trial{trial}"
        code, _ = run(train_args(pairs_file, tiny_bert_dir, out), tmp_path, kill=str(k))
        assert code == -9, f"kill at write {k} of {total} did not happen"
        run(train_args(pairs_file, tiny_bert_dir, out) + ["--resume"], tmp_path)
        same_tensors(tmp_path / "ref" / "model" / "model.safetensors", out / "model" / "model.safetensors")
        assert json.loads((out / "metrics.json").read_text()) == json.loads((tmp_path / "ref" / "metrics.json").read_text())
        assert_whole(out)


# ---- laplace fit -----------------------------------------------------------------------------------
def test_laplace_killed_then_rerun_matches_uninterrupted(tmp_path, pairs_file, tiny_bert_dir):
    from bayesrm.models.reward_model import RewardModel, RewardModelConfig

    RewardModel.from_config(RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=24), seed=0).save_pretrained(tmp_path / "m")

    def args(out):
        return ["laplace", "--model", str(tmp_path / "m"), "--data", str(pairs_file), "--out", str(out), "--low-rank", "4",
                "--prior-precision", "auto", "--batch-size", "16"]

    _, (total, _) = run(args(tmp_path / "ref"), tmp_path)
    for trial, k in enumerate(kill_points(total, "laplace")):
        out = tmp_path / f"trial{trial}"
        assert run(args(out), tmp_path, kill=str(k))[0] == -9
        assert_whole(tmp_path)  # a killed save leaves the old posterior or none, never half of one
        run(args(out), tmp_path)
        same_tensors(tmp_path / "ref" / "model.safetensors", out / "model.safetensors", atol=0)
        same_tensors(tmp_path / "ref" / "reward_model" / "model.safetensors", out / "reward_model" / "model.safetensors", atol=0)


# ---- sampling and bon stages -------------------------------------------------------------------------
def test_bon_killed_in_sampling_and_in_a_stage_then_rerun_is_identical(tmp_path, tiny_bert_dir, tiny_tokenizer_dir):
    from scenario_util import save_tiny_causal_lm, tiny_scenario

    lm = save_tiny_causal_lm(tmp_path / "lm", tiny_tokenizer_dir)

    tiny_scenario(tmp_path, lm, tiny_bert_dir, sampling={"max_new_tokens": 4, "batch_size": 4},
                  proxies=[{"name": "map", "method": "map"}, {"name": "lap", "method": "laplace", "base": "map"}])

    def args(out):
        return ["bon", "--config", str(tmp_path / "scenario.yaml"), "--out", str(out), "--no-progress"]

    _, (total, fsyncs) = run(args(tmp_path / "ref"), tmp_path)
    assert fsyncs >= 3  # sampling appends its cache batch by batch
    for trial, (k_sample, k_any) in enumerate(zip(kill_points(fsyncs, "sampling"), kill_points(total, "bon"))):
        out = tmp_path / f"trial{trial}"
        assert run(args(out), tmp_path, kill=f"fsync:{k_sample}")[0] == -9  # in the middle of sampling
        assert run(args(out), tmp_path, kill=str(k_any))[0] in (-9, 0)  # at any write of the rerun
        run(args(out), tmp_path)
        ref = tmp_path / "ref"
        for name in ["prompts.json", "pairs.jsonl", "curves.json"]:
            assert (out / name).read_text() == (ref / name).read_text(), name
        for name in ["gold", "map", "lap"]:
            same_tensors(ref / "scores" / f"{name}.safetensors", out / "scores" / f"{name}.safetensors", atol=0)
        cache = sorted(p.relative_to(ref) for p in ref.rglob("*.jsonl") if "samples" in p.parts)
        for rel in cache:
            assert sorted((out / rel).read_text().splitlines()) == sorted((ref / rel).read_text().splitlines())
        assert_whole(out)


# ---- rl steps ----------------------------------------------------------------------------------------
def test_rl_killed_then_resumed_matches_uninterrupted(tmp_path, tiny_tokenizer_dir):
    import test_rl_train as rl
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tok.bos_token, tok.eos_token = "<s>", "</s>"
    rl.tiny_lm(tok).save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    from bayesrm.models.reward_model import RewardModel, RewardModelConfig
    from conftest import _save_tiny

    (tmp_path / "prompts.txt").write_text("\n".join(rl.PROMPTS) + "\n")
    bert = _save_tiny("bert", tmp_path / "bert", tiny_tokenizer_dir)
    RewardModel.from_config(RewardModelConfig(backbone=str(bert), lora_r=2, max_length=24), seed=0).save_pretrained(tmp_path / "proxy")
    (tmp_path / "scenario.yaml").write_text(
        "name: tiny\nrl:\n  policy: ./policy\n  proxy: ./proxy\n  prompts: ./prompts.txt\n  reward: mean\n"
        "  prompts_per_step: 2\n  samples_per_prompt: 2\n  max_new_tokens: 4\n  save_every: 1\n  chat_template: false\n"
        "  plot: false\n  lora_r: 2\n")

    def args(out):
        return ["rl", "--config", str(tmp_path / "scenario.yaml"), "--out", str(out), "--quiet", "--algo", "rloo", "--steps", "3"]

    def steps(out):
        drop = ("time", "seconds", "per_s", "elapsed")
        return [{k: v for k, v in json.loads(line).items() if not any(d in k for d in drop)}
                for line in (out / "log.jsonl").read_text().splitlines()]

    _, (total, _) = run(args(tmp_path / "ref"), tmp_path)
    for trial, k in enumerate(kill_points(total, "rl")):
        out = tmp_path / f"trial{trial}"
        assert run(args(out), tmp_path, kill=str(k))[0] == -9
        run(args(out) + ["--resume"], tmp_path)
        assert steps(out) == steps(tmp_path / "ref")
        same_tensors(tmp_path / "ref" / "checkpoint" / "model.safetensors", out / "checkpoint" / "model.safetensors", atol=0)
        assert_whole(out)
