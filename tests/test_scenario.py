"""Scenario config, gold-labelled pair synthesis, and a tiny end-to-end best-of-n run with tiny models."""

import json
import math

import pytest
import torch

from bayesrm.scenarios.config import load_scenario
from bayesrm.scenarios.preferences import gold_labelled_pairs
from scenario_util import save_tiny_causal_lm, write_tiny_scenario


def test_builtin_scenario_and_presets_load():
    base = load_scenario("sentiment")
    assert base.policy == "smollm2" and base.gold == "vader" and {p.method for p in base.proxies} >= {"map", "lora-ensemble", "laplace"}
    full = load_scenario("sentiment", preset="full")
    assert full.bon.n_samples > base.bon.n_samples and full.bon_ns()[-1] == full.bon.n_samples
    assert base.bon_ns() == [1, 2, 4, 8, 16, 32]


@pytest.mark.parametrize(("preset", "proxy", "kl_mode"), [
    ("rl-small-map", "map", "penalty"), ("rl-small-up", "diverse", "token_loss"), ("rl-small-laplace", "laplace", "penalty"),
])
def test_rl_presets_resolve_to_the_comparison_runs(preset, proxy, kl_mode):
    from bayesrm.rewards import parse_reward

    cfg = load_scenario("sentiment", preset=preset, overrides={"rl": {"seed": 1}}).rl
    assert cfg.proxy.endswith(f"runs/demo/proxies/{proxy}/model") and cfg.kl_mode == kl_mode
    assert cfg.algo == "rloo" and cfg.seed == 1 and cfg.steps == 40
    reward = parse_reward(cfg.reward, **cfg.reward_params)
    assert reward.spec().startswith("zscore|") and not reward.is_fitted()  # fitted on the first RL batch


def test_fair_rl_presets_differ_only_in_the_penalty():
    """The fair comparison: same proxy, algorithm, KL mechanism and coefficient; only the reward changes."""
    from dataclasses import asdict

    cfgs = {p: asdict(load_scenario("sentiment", preset=f"rl-fair-{p}").rl) for p in ("mean", "std", "var", "up")}
    rewards = {p: c.pop("reward") for p, c in cfgs.items()}
    assert all(c == cfgs["mean"] for c in cfgs.values())
    assert rewards == {"mean": "zscore|mean", "std": "zscore|std:k=1", "var": "zscore|var:k=1", "up": "zscore|up:beta2=1"}
    assert cfgs["mean"]["kl_mode"] == "penalty" and cfgs["mean"]["proxy"].endswith("runs/demo/proxies/diverse/model")


def test_scenario_errors_name_the_key(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("name: x\nbon: {prompts: 2, n_sampels: 8}\n")
    with pytest.raises(ValueError, match=r"s.yaml: bon.n_sampels: unknown key \(did you mean 'n_samples'\?\)"):
        load_scenario(str(bad))
    bad.write_text("name: x\nproxies: [{name: lap, method: laplace}]\n")
    with pytest.raises(ValueError, match="needs base"):
        load_scenario(str(bad))
    with pytest.raises(ValueError, match="no preset 'huge'"):
        load_scenario("sentiment", preset="huge")


def test_gold_labels_follow_bradley_terry():
    prompts = ["p"] * 400
    samples = [["a", "b"]] * 400
    gold = [[0.25, 0.0]] * 400
    pairs = gold_labelled_pairs(prompts, samples, gold, temperature=0.25, seed=0)
    rate = sum(p.chosen == "a" for p in pairs) / len(pairs)
    expected = 1 / (1 + math.exp(-1.0))  # sigmoid((0.25 - 0) / 0.25)
    assert abs(rate - expected) < 3 * math.sqrt(expected * (1 - expected) / 400)
    # near-zero temperature: labels follow the gold order; noise flips about eps of them
    sharp = gold_labelled_pairs(prompts, samples, gold, temperature=1e-4, seed=1)
    assert all(p.chosen == "a" for p in sharp)
    noisy = gold_labelled_pairs(prompts, samples, gold, temperature=1e-4, noise=0.2, seed=1)
    assert 0.12 < sum(p.chosen == "b" for p in noisy) / 400 < 0.28
    # temperature 0: hard labels, exactly the gold order; gold ties are skipped, not labelled at random
    hard = gold_labelled_pairs(["p"] * 3, [["a", "b", "c"]] * 3, [[0.3, 0.1, 0.3], [0.0, 1.0, -1.0], [2.0, 2.0, 2.0]],
                               temperature=0)
    assert [(p.chosen, p.rejected) for p in hard] == [("a", "b"), ("c", "b"), ("b", "a"), ("a", "c"), ("b", "c")]
    with pytest.raises(ValueError, match="temperature"):
        gold_labelled_pairs(prompts, samples, gold, temperature=-1)
    # identical or empty responses are never paired; all C(4, 2) pairs otherwise
    assert len(gold_labelled_pairs(["p"], [["x", "x", "y", ""]], [[0, 0, 1, 0]])) == 2
    assert len(gold_labelled_pairs(["p"], [["w", "x", "y", "z"]], [[0, 0, 1, 0]])) == 6


@pytest.fixture
def tiny_causal_lm_dir(tmp_path_factory, tiny_tokenizer_dir):
    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"), tiny_tokenizer_dir, hidden_size=32, intermediate_size=64,
                               max_position_embeddings=128)


def test_tiny_scenario_end_to_end_and_resume(tmp_path, tiny_causal_lm_dir, tiny_bert_dir):
    from bayesrm.scenarios.bon import BoNRunner

    scenario = write_tiny_scenario(
        tmp_path, tiny_causal_lm_dir, tiny_bert_dir, n_prompts=12, file_name="tiny.yaml",
        sampling__max_new_tokens=6,
        preferences={"prompts": 8, "samples_per_prompt": 3, "validation_fraction": 0.25},
        model__max_length=24,
        training={"max_steps": 3, "per_device_train_batch_size": 4},
        proxies=[{"name": "map", "method": "map"},
                 {"name": "ens", "method": "lora-ensemble", "members": 2},
                 {"name": "lap", "method": "laplace", "base": "map", "prior_precision": 1.0}],
        bon={"prompts": 4, "n_samples": 4, "n_boot": 50, "rewards": ["mean", "zscore|std:k=1", "zscore|min"]},
        two_property={"gold": "textblob:subjectivity"})
    config = load_scenario(str(scenario))
    out = tmp_path / "out"
    report = BoNRunner(config, out, progress=False).run()
    text = report.read_text()
    assert "| map / `mean` |" in text and "| ens / `zscore|min` |" in text and "| lap / `zscore|std:k=1` |" in text
    assert "map / `zscore|min`" not in text  # worst-case needs members
    assert "sum of log-sigmoid (AND)" in text
    sigma_gold = json.loads((out / "sigma_gold.json").read_text())  # sigma vs |z(proxy) - z(gold)|
    assert sigma_gold["map"]["pearson"] != sigma_gold["map"]["pearson"]  # NaN: a point model's sigma is 0
    assert -1 <= sigma_gold["lap"]["spearman"] <= 1 and "| ens |" in text
    for name in ["bon.png", "curves.json", "bon/map/report.md", "bon/ens/bon.png", "scores/gold.safetensors", "pairs.jsonl"]:
        assert (out / name).exists(), name
    # a re-run generates, trains and scores nothing: every stage comes from disk
    again = BoNRunner(config, out, progress=False)
    again.run()
    assert again._sampler is None or again.sampler().stats.samples == 0
    assert not any(k.startswith(("train proxy", "score")) for k in again.timings)


def test_bon_command_pools_seeds(tmp_path, tiny_causal_lm_dir, tiny_bert_dir):
    from bayesrm.cli.main import main

    scenario = write_tiny_scenario(
        tmp_path, tiny_causal_lm_dir, tiny_bert_dir, n_prompts=8, prompt="tell me about w{i}", file_name="tiny.yaml",
        preferences={"prompts": 5, "samples_per_prompt": 3, "validation_fraction": 0.2},
        model__max_length=24,
        training={"max_steps": 2, "per_device_train_batch_size": 4},
        proxies=[{"name": "ens", "method": "lora-ensemble", "members": 2}],
        bon={"prompts": 3, "n_samples": 4, "n_boot": 50, "rewards": ["mean", "std:k=1"]})
    out = tmp_path / "out"
    assert main(["bon", "--config", str(scenario), "--out", str(out), "--seeds", "0", "1", "--no-progress"]) == 0
    assert (out / "seed0" / "report.md").exists() and (out / "seed1" / "report.md").exists()
    pooled = (out / "report.md").read_text()
    assert "Pooled over seeds [0, 1]" in pooled and "| ens / `std:k=1` |" in pooled
    caches = [p for p in (out / "samples").rglob("*.jsonl") if p.parent.name != "gold"]  # gold/: the gold-score cache
    assert len(caches) == 1  # both seeds share one sample cache
    # ... and the same prompts, so the second seed sampled nothing new
    assert json.loads((out / "seed0" / "prompts.json").read_text()) == json.loads((out / "seed1" / "prompts.json").read_text())
    cache = caches[0]
    assert len(cache.read_text().splitlines()) == 5 * 3 + 3 * 4


def test_scenario_device_is_checked_at_load_and_resolved_before_any_work(tmp_path, monkeypatch):
    """`device: gpu` fails when the file is read, naming the field; auto resolves to cuda only when CUDA is
    visible, and an explicit cuda on a machine without one fails before anything is written."""
    import torch

    from bayesrm.config import ConfigError
    from bayesrm.models.device import resolve_device
    from bayesrm.scenarios.bon import BoNRunner
    from bayesrm.scenarios.config import load_scenario

    with pytest.raises(ConfigError, match=r"device must be auto, cpu, cuda, cuda:N or mps; got 'gpu'"):
        load_scenario("helpful", overrides={"device": "gpu"})
    assert load_scenario("helpful").device == "auto"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu" and resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="no CUDA device is visible"):
        BoNRunner(load_scenario("helpful", overrides={"device": "cuda"}), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda:0") == "cuda:0"
    with pytest.raises(ValueError, match="only 1 CUDA device"):
        resolve_device("cuda:1")
