"""The two-property (logical AND) variant on a tiny helpful-shaped scenario: a reward-model gold plus the
conciseness judge, thresholds from the preference samples, every P(both) curve checked by brute force."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from bayesrm.scenarios.config import load_scenario


@pytest.fixture
def tiny_gold_rm_dir(tmp_path_factory, tiny_llama_dir):
    """A tiny decoder reward model (last-token pooling) saved as a checkpoint: the first gold property."""
    from bayesrm.models.reward_model import RewardModel, RewardModelConfig

    cfg = RewardModelConfig(backbone=str(tiny_llama_dir), pooling="last", lora_r=2, max_length=32, target_modules="all-linear")
    d = tmp_path_factory.mktemp("gold_rm")
    RewardModel.from_config(cfg, seed=3).save_pretrained(d)
    return d


def _brute_force_bon(select: np.ndarray, value: np.ndarray, n: int) -> float:
    """Mean over prompts of E[value of the argmax of select over a uniformly drawn n-subset], by enumeration.
    Ties in select are averaged over (the estimator breaks them at random); the tested statistics are
    constant within tied groups of identical texts, so either convention gives the same number."""
    out = []
    for s, v in zip(select, value):
        picks = []
        for subset in itertools.combinations(range(len(s)), n):
            best = max(s[i] for i in subset)
            picks.append(np.mean([v[i] for i in subset if s[i] == best]))
        out.append(np.mean(picks))
    return float(np.mean(out))


def _log_sigmoid(x: np.ndarray) -> np.ndarray:
    return -np.logaddexp(0.0, -x)


def test_tiny_helpful_and_scenario_matches_brute_force_and_resumes(tmp_path, tiny_llama_dir, tiny_bert_dir, tiny_gold_rm_dir):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, LlamaForCausalLM

    from bayesrm.evaluation.gold import make_judge
    from bayesrm.evaluation.report import load_curves
    from bayesrm.scenarios.bon import BoNRunner

    lm = tmp_path / "policy"
    LlamaForCausalLM.from_pretrained(tiny_llama_dir).save_pretrained(lm)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(lm)
    alpaca = tmp_path / "alpaca.jsonl"
    alpaca.write_text("".join(json.dumps({"instruction": f"how do i help w{i}", "output": "x"}) + "\n" for i in range(10)))
    scenario = tmp_path / "helpful-and.yaml"
    scenario.write_text(json.dumps({
        "name": "helpful-and", "policy": str(lm), "gold": f"rm:{tiny_gold_rm_dir}",
        "prompts": {"source": [str(alpaca)]},
        "sampling": {"max_new_tokens": 6, "batch_size": 16},
        "preferences": {"prompts": 5, "samples_per_prompt": 4, "validation_fraction": 0.2, "label_noise": 0.25},
        "model": {"backbone": str(tiny_bert_dir), "lora_r": 2, "max_length": 24},
        "training": {"max_steps": 2, "per_device_train_batch_size": 4},
        "proxies": [{"name": "map", "method": "map"}],
        "bon": {"prompts": 3, "n_samples": 8, "n_boot": 50, "rewards": ["mean"]},
        "two_property": {"gold": "length:words", "sign": 1.0, "threshold_quantile": 0.5, "quantile": 0.85},
    }))
    config = load_scenario(str(scenario))
    out = tmp_path / "out"
    runner = BoNRunner(config, out, progress=False)
    text = runner.run().read_text()
    assert "Two properties: logical AND" in text and "Paired difference in P(both)" in text
    for name in ["two_property.png", "two_property.json", "pairs_prop2.jsonl", "proxies/map_prop2/model/config.json",
                 "scores/map_prop2.safetensors", "scores/gold_prop2.safetensors"]:
        assert (out / name).exists(), name
    info = json.loads((out / "two_property.json").read_text())

    # thresholds: the medians over the preference-prompt samples, recomputed here by hand
    sets = json.loads((out / "prompts.json").read_text())
    pref = runner.samples(sets["train"], 4, "preference data")
    flat_p = [p for p, row in zip(sets["train"], pref) for _ in row]
    flat_r = [r for row in pref for r in row]
    gold_pref = make_judge(config.gold).score(flat_p, flat_r).mean.numpy()  # scored afresh, not from the cache
    words_pref = np.array([-len(r.split()) for r in flat_r], dtype=float)
    assert info["thresholds"] == pytest.approx([np.median(gold_pref), np.median(words_pref)])

    # every selection's P(both), P(1), P(2) and gold 2 by enumeration of the n-subsets of each prompt's samples
    bon = runner.samples(sets["bon"], 8, "best-of-n")
    g1 = load_file(out / "scores" / "gold.safetensors")["mean"].double().numpy().reshape(3, 8)
    g2 = np.array([[-len(r.split()) for r in row] for row in bon], dtype=float)
    assert load_file(out / "scores" / "gold_prop2.safetensors")["mean"].numpy().reshape(3, 8) == pytest.approx(g2)
    r1 = load_file(out / "scores" / "map.safetensors")["mean"].double().numpy().reshape(3, 8)
    r2 = load_file(out / "scores" / "map_prop2.safetensors")["mean"].double().numpy().reshape(3, 8)
    t1, t2 = info["thresholds"]
    and_score = sum(_log_sigmoid(r - np.quantile(r, 0.85, axis=1, keepdims=True)) for r in (r1, r2))
    selections = {"proxy 1 only": r1, "proxy 2 only": r2, "sum of raw rewards": r1 + r2,
                  "sum of z-scored rewards": (r1 - r1.mean()) / r1.std() + (r2 - r2.mean()) / r2.std(),
                  "sum of log-sigmoid (AND)": and_score}
    values = {"p_all": ((g1 >= t1) & (g2 >= t2)).astype(float), "p_1": (g1 >= t1).astype(float),
              "p_2": (g2 >= t2).astype(float), "gold2": g2, "gold": g1}
    curves = load_curves(out / "two_property_curves.json")
    assert set(curves) == set(selections)
    for name, select in selections.items():
        curve = curves[name]
        assert curve.ns == [1, 2, 4, 8]
        for m, n in enumerate(curve.ns):
            for stat, value in values.items():
                expected = _brute_force_bon(np.round(select, 9), value, n)
                assert math.isclose(float(curve.stats[stat].mean[m]), expected, abs_tol=1e-6), (name, stat, n)
    assert info["base_rates"]["p_all"] == pytest.approx(values["p_all"].mean())

    # pooling seeds: two copies of one run pool to that run; runs with other thresholds refuse to pool
    from bayesrm.scenarios.two_property import pool_two_property

    pooled_md = pool_two_property({0: out, 1: out}, tmp_path / "pooled")
    pooled = load_curves(tmp_path / "pooled" / "two_property_curves.json")
    for name, curve in curves.items():
        assert pooled[name].stats["p_all"].mean.tolist() == pytest.approx(curve.stats["p_all"].mean.tolist())
    assert "averaged over the seeds [0, 1]" in pooled_md and (tmp_path / "pooled" / "two_property.png").exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "two_property_curves.json").write_text((out / "two_property_curves.json").read_text())
    (other / "two_property.json").write_text(json.dumps({**info, "thresholds": [0.0, 0.0]}))
    with pytest.raises(ValueError, match="cannot pool"):
        pool_two_property({0: out, 1: other}, tmp_path / "pooled2")

    # a rerun trains, scores and samples nothing
    again = BoNRunner(config, out, progress=False)
    assert "Two properties: logical AND" in again.run().read_text()
    assert not any(k.startswith(("train proxy", "score", "label")) for k in again.timings)
    assert again.sampler().stats.samples == 0


def test_two_property_config_is_checked():
    from bayesrm.scenarios.config import TwoPropertyConfig

    with pytest.raises(ValueError, match="one per property"):
        TwoPropertyConfig(thresholds=[0.1])
    with pytest.raises(ValueError, match="threshold_quantile"):
        TwoPropertyConfig(threshold_quantile=1.5)
    assert load_scenario("helpful", preset="study-and").two_property.gold == "length:words"


def test_and_selection_against_numpy_and_brute_force_when_one_proxy_dominates_the_raw_sum():
    """Proxy 1 has 100x the scale of proxy 2, so the raw sum picks by property 1 alone; the summed log-sigmoid
    (reference: the per-prompt median) first requires r1 above its reference, then prefers high r2: its pick
    satisfies both properties (each true for about half the samples) more often."""
    import torch

    from bayesrm.alignment.bon import bon_curves, satisfies_all
    from bayesrm.scenarios.two_property import AND, RAW, and_selections
    from bayesrm.types import RewardPrediction

    rng = np.random.default_rng(0)
    P, N = 30, 8
    g1, g2 = rng.normal(size=(P, N)), rng.normal(size=(P, N))
    r1, r2 = 100.0 * (g1 + 0.3 * rng.normal(size=(P, N))), g2 + 0.3 * rng.normal(size=(P, N))
    ids = [str(p) for p in range(P) for _ in range(N)]
    sel = and_selections(RewardPrediction.point(torch.tensor(r1.ravel())), RewardPrediction.point(torch.tensor(r2.ravel())),
                         ids, quantile=0.5)
    by_hand = sum(_log_sigmoid(r - np.median(r, axis=1, keepdims=True)) for r in (r1, r2))
    assert sel[AND].view(P, N).numpy() == pytest.approx(by_hand, rel=1e-5, abs=1e-5)  # float32 predictions
    assert sel[RAW].view(P, N).numpy() == pytest.approx(r1 + r2, rel=1e-5, abs=1e-5)
    both = satisfies_all([torch.tensor(g1), torch.tensor(g2)], [0.0, 0.0])
    p_both = {}
    for name in (RAW, AND):
        curve = bon_curves(sel[name].view(P, N), torch.tensor(g1), [1, 2, 4, 8], n_boot=20, extra={"p_all": both})
        for m, n in enumerate(curve.ns):
            expected = _brute_force_bon(sel[name].view(P, N).numpy(), both.numpy(), n)
            assert float(curve.stats["p_all"].mean[m]) == pytest.approx(expected, abs=1e-9)
        p_both[name] = float(curve.stats["p_all"].mean[-1])
    assert p_both[RAW] < 0.7 < p_both[AND], p_both
