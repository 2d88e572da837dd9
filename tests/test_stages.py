"""Stage fingerprints: `bayesrm bon` never reuses an output made with other settings, and writes nothing outside --out."""

from __future__ import annotations

import json

import pytest
import torch

from bayesrm.scenarios.stages import StageRecords, StaleOutputError, changed_keys, fingerprint, safe_name
from scenario_util import save_tiny_causal_lm, tiny_scenario


def test_fingerprint_depends_on_settings_and_upstream_only():
    assert fingerprint({"a": 1, "b": [1, 2]}) == fingerprint({"b": [1, 2], "a": 1})
    assert fingerprint({"a": 1}) != fingerprint({"a": 2})
    assert fingerprint({"a": 1}, ["x"]) != fingerprint({"a": 1}, ["y"])
    assert changed_keys({"t": {"lr": 1, "n": 2}, "s": 0}, {"t": {"lr": 3, "n": 2}, "s": 0, "new": 1}) == ["new", "t.lr"]


def test_records_refuse_or_redo_changed_stages(tmp_path):
    out = tmp_path / "run"
    records = StageRecords(out)
    result = out / "a.txt"
    fp, fresh = records.fresh("a", {"lr": 1}, [], [result])
    assert not fresh
    result.write_text("made with lr=1")
    assert StageRecords(out).fresh("a", {"lr": 1}, [], [result]) == (fp, True)
    with pytest.raises(StaleOutputError, match=r"stage 'a' was made with other settings: changed lr.*--overwrite"):
        StageRecords(out).fresh("a", {"lr": 2}, [], [result])
    assert result.read_text() == "made with lr=1"
    with pytest.raises(StaleOutputError, match="depends on a stage that changed"):
        StageRecords(out).fresh("a", {"lr": 1}, ["upstream changed"], [result])
    fp2, fresh = StageRecords(out, overwrite=True).fresh("a", {"lr": 2}, [], [result])
    assert not fresh and fp2 != fp and not result.exists()  # the stale output is gone before it is redone
    # a record without its output (a crash mid-stage) is redone without complaint
    assert StageRecords(out).fresh("a", {"lr": 2}, [], [result]) == (fp2, False)


def test_foreign_or_legacy_directories_are_refused(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(StaleOutputError, match=r"not empty and holds no stages.json"):
        StageRecords(tmp_path / "mine")
    StageRecords(tmp_path / "mine", overwrite=True)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "x"  # --overwrite deletes nothing it did not make


@pytest.mark.parametrize("name", ["../../escaped_proxy", "a/b", "..", ".hidden", "", "x\0y", "tab\there", "C:\\x"])
def test_unsafe_names_are_refused(name):
    with pytest.raises(ValueError, match="cannot be used as a file name"):
        safe_name(name, "proxy name")


@pytest.mark.parametrize("name", ["map", "ens-5", "lap_0.1", "Ünïcode"])
def test_plain_names_pass(name):
    assert safe_name(name, "proxy name") == name


# ---- a tiny scenario end to end -------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_lm_dir(tmp_path_factory, tiny_tokenizer_dir):
    return save_tiny_causal_lm(tmp_path_factory.mktemp("tiny_lm"), tiny_tokenizer_dir)


def test_bon_rerun_with_changed_settings_is_refused_or_redone(tmp_path, tiny_lm_dir, tiny_bert_dir):
    """Regression: a rerun after editing training / label settings used to reuse every stale stage silently."""
    from bayesrm.scenarios.bon import BoNRunner
    from bayesrm.types import RewardPrediction

    out = tmp_path / "out"
    BoNRunner(tiny_scenario(tmp_path, tiny_lm_dir, tiny_bert_dir), out, progress=False).run()
    first_scores = RewardPrediction.load(out / "scores" / "map.safetensors").mean
    first_pairs = (out / "pairs.jsonl").read_text()

    changed = tiny_scenario(tmp_path, tiny_lm_dir, tiny_bert_dir, training__learning_rate=0.5)
    with pytest.raises(StaleOutputError, match=r"stage 'proxy map' was made with other settings: changed training.learning_rate"):
        BoNRunner(changed, out, progress=False).run()
    redo = BoNRunner(changed, out, progress=False, overwrite=True)
    redo.run()
    assert "train proxy map" in redo.timings and "label pairs" not in redo.timings and "score gold" not in redo.timings
    assert not torch.equal(RewardPrediction.load(out / "scores" / "map.safetensors").mean, first_scores)
    assert "1e-3" not in json.dumps(json.loads((out / "stages.json").read_text())["stages"]["proxy map"])

    noisy = tiny_scenario(tmp_path, tiny_lm_dir, tiny_bert_dir, training__learning_rate=0.5, preferences__label_noise=0.4)
    with pytest.raises(StaleOutputError, match=r"stage 'pairs' was made with other settings: changed label_noise"):
        BoNRunner(noisy, out, progress=False).run()
    redo = BoNRunner(noisy, out, progress=False, overwrite=True)
    redo.run()
    assert {"label pairs", "train proxy map", "score map"} <= set(redo.timings) and "score gold" not in redo.timings
    assert (out / "pairs.jsonl").read_text() != first_pairs
    again = BoNRunner(noisy, out, progress=False)  # unchanged: everything from disk
    again.run()
    assert not any(k.startswith(("label", "train proxy", "score")) for k in again.timings)


def test_escaping_proxy_name_writes_nothing_outside_out(tmp_path, tiny_lm_dir, tiny_bert_dir):
    """Regression: a proxy named ../../escaped_proxy wrote its model, metrics and scores outside --out."""
    from bayesrm.cli.main import main

    config = tiny_scenario(tmp_path, tiny_lm_dir, tiny_bert_dir, proxies=[{"name": "../../escaped_proxy", "method": "map"}])
    assert config.proxies[0].name == "../../escaped_proxy"
    before = set(tmp_path.rglob("*"))
    out = tmp_path / "a" / "b" / "out"
    assert main(["bon", "--config", str(tmp_path / "scenario.yaml"), "--out", str(out), "--no-progress"]) == 2
    assert set(tmp_path.rglob("*")) == before  # not even --out was created


def test_rl_resume_with_other_settings_is_refused(tmp_path, tiny_tokenizer_dir):
    """Regression: `bayesrm rl --resume` checked only the algorithm; a changed kl_coef or lr silently mixed two runs."""
    from transformers import AutoTokenizer

    import test_rl_train as rl  # the tiny policy / scorer of the RL tests

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tok.bos_token, tok.eos_token = "<s>", "</s>"
    rl.trainer(tok, tmp_path / "run", steps=1, algo="rloo").train()
    with pytest.raises(ValueError, match=r"other settings \(changed: kl_coef, lr\)"):
        rl.trainer(tok, tmp_path / "run", steps=2, algo="rloo", lr=0.5, kl_coef=0.7).resume()
    assert rl.trainer(tok, tmp_path / "run", steps=2, algo="rloo").resume() == 1  # a longer run is the same run


def test_more_best_of_n_prompts_extend_the_set_and_keep_the_proxies(tmp_path, tiny_lm_dir, tiny_bert_dir):
    """More best-of-n prompts rescore the proxies on the extended set but never retrain them; fewer
    preference prompts do retrain (the pairs' upstream is the preference prompts themselves)."""
    from bayesrm.scenarios.bon import BoNRunner

    out = tmp_path / "out"
    BoNRunner(tiny_scenario(tmp_path, tiny_lm_dir, tiny_bert_dir), out, progress=False).run()
    first = json.loads((out / "prompts.json").read_text())
    more = tiny_scenario(tmp_path, tiny_lm_dir, tiny_bert_dir, bon__prompts=4)
    with pytest.raises(StaleOutputError, match=r"stage 'prompts' was made with other settings: changed bon_prompts"):
        BoNRunner(more, out, progress=False).run()
    redo = BoNRunner(more, out, progress=False, overwrite=True)
    redo.run()
    now = json.loads((out / "prompts.json").read_text())
    assert now["train"] == first["train"] and now["bon"][:3] == first["bon"] and len(now["bon"]) == 4
    assert "score map" in redo.timings and "train proxy map" not in redo.timings and "label pairs" not in redo.timings
    fewer = BoNRunner(tiny_scenario(tmp_path, tiny_lm_dir, tiny_bert_dir, bon__prompts=4, preferences__prompts=5), out,
                      progress=False, overwrite=True)
    fewer.run()
    assert {"label pairs", "train proxy map", "score map"} <= set(fewer.timings)


def test_sampling_identity_is_the_sample_cache_key(monkeypatch):
    """A stage's sampling identity is what decides the samples: dtype resolved on the device (so `auto` on a
    bf16 CPU and on an fp32-only CPU are two identities), no batch_size, attention 'model' left out as in
    the cache key (records made before that option existed stay fresh)."""
    import bayesrm.generation.precision as precision
    from bayesrm.generation.sampler import SamplingConfig
    from bayesrm.scenarios.bon import sampling_identity

    fp32 = SamplingConfig(dtype="fp32", attention="model")
    assert sampling_identity(fp32) == fp32.cache_settings("fp32")
    assert "batch_size" not in sampling_identity(fp32) and "attention" not in sampling_identity(fp32)
    assert sampling_identity(SamplingConfig(dtype="fp32", attention="model", batch_size=7)) == sampling_identity(fp32)
    assert sampling_identity(SamplingConfig(dtype="fp32"))["attention"] == "grouped"
    auto = SamplingConfig(dtype="auto", attention="model")
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda *a: True)
    on_bf16_cpu = sampling_identity(auto)
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda *a: False)
    on_fp32_cpu = sampling_identity(auto)
    assert on_bf16_cpu == {**on_fp32_cpu, "dtype": "bf16"} and on_fp32_cpu == sampling_identity(fp32)
    assert sampling_identity(auto, device="cuda") == on_bf16_cpu


def test_identity_mapping_leaves_out_legacy_values_only():
    """Fields added later with a LEGACY value keep earlier records' fingerprints; every other field,
    default-valued or not, is recorded (a changed default must make old stages stale)."""
    from dataclasses import dataclass, field

    from bayesrm.config import LEGACY, identity_mapping, to_mapping
    from bayesrm.uncertainty.laplace.config import LaplaceConfig

    @dataclass
    class Old:
        lr: float = 0.1

    @dataclass
    class New:
        lr: float = 0.1
        extra: int = field(default=3, metadata={LEGACY: 0})

    @dataclass
    class NewDefault:
        lr: float = 0.2

    assert identity_mapping(New(extra=0)) == identity_mapping(Old()) == {"lr": 0.1}
    assert fingerprint({"p": identity_mapping(New(extra=0))}) == fingerprint({"p": identity_mapping(Old())})
    assert identity_mapping(New()) == {"lr": 0.1, "extra": 3}  # the new default differs from the legacy: recorded
    assert identity_mapping(NewDefault()) != identity_mapping(Old())  # a changed default is seen...
    assert to_mapping(NewDefault(), changed_only=True) == to_mapping(Old(), changed_only=True) == {}  # ...changed_only hides it
    # a posterior fitted before streaming / subsampling / structures existed: the four fields of that time
    before = identity_mapping(LaplaceConfig(stream_above=None))
    assert set(before) == {"include_head", "low_rank", "prior_precision", "kfac"}
    assert identity_mapping(LaplaceConfig())["stream_above"] == 1024  # today's default streams: another posterior
    assert identity_mapping(LaplaceConfig(stream_above=None, subsample=0.25))["subsample"] == 0.25


def test_training_identity_records_bayesrm_defaults_and_changed_hf_fields():
    """A proxy's training identity holds every RewardTrainingConfig field (so a changed bayesrm default makes
    earlier proxies stale, which changed_only would hide), inherited fields only where they differ from
    transformers' defaults, and never where output goes."""
    from bayesrm.training.trainer import RewardTrainingConfig

    base = RewardTrainingConfig(output_dir="/tmp/a", use_cpu=True)
    ident = base.identity()
    assert ident["learning_rate"] == 2e-4 and ident["use_margin"] is True and ident["center_rewards_coefficient"] == 0.0
    assert "output_dir" not in ident and "weight_decay" not in ident and "adam_beta1" not in ident
    assert RewardTrainingConfig(output_dir="/tmp/b", use_cpu=True).identity() == ident
    assert RewardTrainingConfig(output_dir="/tmp/a", use_cpu=True, weight_decay=0.1).identity()["weight_decay"] == 0.1
    assert RewardTrainingConfig(output_dir="/tmp/a", use_cpu=True, learning_rate=1e-3).identity() != ident
