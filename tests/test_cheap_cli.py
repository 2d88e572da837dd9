"""CLI round trips of the cheap methods on tiny random models: WARM and MC dropout (train), last-layer
Laplace and per-member bootstrap Laplace (laplace)."""

from __future__ import annotations

import json

import pytest
import torch

from bayesrm.cli.main import main
from bayesrm.models.reward_model import RewardModel
from bayesrm.registry import load_scorer
from bayesrm.uncertainty.laplace import LaplaceEnsemble
from bayesrm.uncertainty.last_layer import LastLayerLaplace
from bayesrm.uncertainty.mc_dropout import MCDropout


@pytest.fixture
def pairs_file(tmp_path, toy_pairs):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in toy_pairs))
    return path


def train_args(data, backbone, out, *extra):
    return ["train", "--data", str(data), "--backbone", str(backbone), "--lora-r", "2", "--max-length", "24",
            "--max-steps", "6", "--learning-rate", "0.05", "--per-device-train-batch-size", "8",
            "--test-fraction", "0.25", "--out", str(out), "--use-cpu", "true", *extra]


def eval_metrics(model_dir, out) -> dict:
    assert main(["eval", "--model", str(model_dir), "--out", str(out)]) == 0  # the saved split: the same held-out pairs
    return json.loads((out / "metrics.json").read_text())


def test_train_warm_saves_one_reward_model(pairs_file, tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "warm"
    assert main(train_args(pairs_file, tiny_bert_dir, out, "--method", "warm", "--members", "2", "--seed", "1")) == 0
    assert (out / "checkpoints" / "member_1").is_dir()  # member k's own run (data order seed 1 + k)
    model = load_scorer(out / "model")
    assert type(model) is RewardModel
    trained = json.loads((out / "metrics.json").read_text())
    assert trained["n"] == 12 and trained["mean_margin_std"] == 0  # a point model
    assert eval_metrics(out / "model", tmp_path / "eval") == pytest.approx(trained)


def test_train_mc_dropout_round_trips_with_its_settings(pairs_file, tiny_bert_dir, tmp_path):
    out = tmp_path / "mc"
    assert main(train_args(pairs_file, tiny_bert_dir, out, "--method", "mc-dropout", "--samples", "4", "--dropout", "0.2",
                           "--seed", "3")) == 0
    model = load_scorer(out / "model")
    assert isinstance(model, MCDropout) and (model.config.samples, model.config.dropout, model.config.seed) == (4, 0.2, 3)
    pred = model.score(["what do you think"] * 2, ["it is good", "it is bad"])
    assert pred.members.shape == (4, 2) and bool((pred.var > 0).all())
    trained = json.loads((out / "metrics.json").read_text())
    assert trained["mean_margin_std"] > 0
    assert eval_metrics(out / "model", tmp_path / "eval") == pytest.approx(trained)  # seeded masks: reproducible


def test_laplace_last_layer_on_the_training_split(pairs_file, tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "map"
    assert main(train_args(pairs_file, tiny_bert_dir, out)) == 0
    capsys.readouterr()
    assert main(["laplace", "--model", str(out / "model"), "--last-layer"]) == 0
    assert "last-layer Laplace on 36 pairs: H = 32 head weights" in capsys.readouterr().err  # 48 pairs, 25% held out
    posterior = load_scorer(out / "model-last-layer")
    assert isinstance(posterior, LastLayerLaplace) and posterior.n_data == 36
    metrics = eval_metrics(out / "model-last-layer", tmp_path / "eval")
    assert metrics["n"] == 12 and metrics["mean_margin_std"] > 0
    capsys.readouterr()
    assert main(["laplace", "--model", str(out / "model"), "--last-layer", "--low-rank", "4", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--low-rank: Laplace-LoRA options, not used by --last-layer" in err
    assert main(["laplace", "--model", str(out / "model"), "--bootstrap", "--out", str(tmp_path / "y")]) == 2
    assert "--bootstrap applies to ensembles" in capsys.readouterr().err


def test_laplace_on_a_bootstrap_ensemble_fits_each_member_on_its_replicate(pairs_file, tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "ens"
    assert main(train_args(pairs_file, tiny_bert_dir, out, "--method", "lora-ensemble", "--members", "2", "--bootstrap")) == 0
    ensemble = load_scorer(out / "model")
    from bayesrm.cli.common import load_split, saved_data_options

    replicates = ensemble.bootstrap_replicates(load_split(saved_data_options(out / "model"))["train"])
    capsys.readouterr()
    assert main(["laplace", "--model", str(out / "model"), "--prior-precision", "1.0"]) == 0
    assert f"member k fitted on its own replicate ({len(replicates[0])}, {len(replicates[1])} pairs)" in capsys.readouterr().err
    posterior = load_scorer(out / "model-laplace")
    assert isinstance(posterior, LaplaceEnsemble) and posterior.bootstrap
    assert [p.n_data for p in posterior.posteriors] == [len(r) for r in replicates] != [36, 36]
    # --bootstrap false: every member on all 36 training pairs
    assert main(["laplace", "--model", str(out / "model"), "--bootstrap", "false", "--out", str(tmp_path / "all")]) == 0
    assert [p.n_data for p in load_scorer(tmp_path / "all").posteriors] == [36, 36]
    assert not torch.equal(posterior.score(["a"], ["it is good"]).var, load_scorer(tmp_path / "all").score(["a"], ["it is good"]).var)
