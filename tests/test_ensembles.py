"""Head and independent ensembles, scoring conventions, bootstrap weights, the factory and trainer integration."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from bayesrm.data.schema import PreferencePair
from bayesrm.models.checkpoint import CheckpointError
from bayesrm.models.reward_model import RewardModel, RewardModelConfig
from bayesrm.training.losses import bradley_terry_loss
from bayesrm.training.trainer import RewardTrainingConfig, train_reward_model
from bayesrm.uncertainty.base import EnsembleConfig
from bayesrm.uncertainty.factory import build_model, train_model
from bayesrm.uncertainty.heads import HeadEnsemble
from bayesrm.uncertainty.independent import IndependentEnsemble
from bayesrm.uncertainty.lora_ensemble import LoRAEnsemble

TEXTS = ["it is good", "bad", "the cat is nice and kind thanks", "i hate it", "hello world w3 w4 w5 w6", "sorry"]


@pytest.fixture
def config(tiny_bert_dir) -> RewardModelConfig:
    return RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=32)


def _pairs(toy_pairs) -> list[PreferencePair]:
    return [PreferencePair(p, c, r) for p, c, r in toy_pairs]


def _training(tmp_path, **kw) -> RewardTrainingConfig:
    args = dict(output_dir=str(tmp_path / "run"), learning_rate=5e-2, per_device_train_batch_size=16, num_train_epochs=2,
                logging_steps=1, use_cpu=True, seed=0, disable_tqdm=True, save_strategy="no")
    return RewardTrainingConfig(**{**args, **kw})


def _pair_losses(model, pairs: list[PreferencePair], target: str) -> float:
    chosen = model.score([p.prompt for p in pairs], [p.chosen for p in pairs]).members
    rejected = model.score([p.prompt for p in pairs], [p.rejected for p in pairs]).members
    return float(bradley_terry_loss(chosen, rejected, target=target)[0])


# ---- scoring conventions -----------------------------------------------------------------------
def test_score_is_population_std_and_keeps_input_order(config):
    ens = HeadEnsemble.from_config(config, EnsembleConfig(members=4, seed=1))
    pred = ens.score(["what"] * len(TEXTS), TEXTS, batch_size=4)
    batch = ens.encoder(["what"] * len(TEXTS), TEXTS)
    with torch.no_grad():
        direct = ens.eval()(batch["input_ids"], batch["attention_mask"])  # [K, B], unsorted, one batch
    torch.testing.assert_close(pred.members, direct, atol=1e-5, rtol=0)
    r = pred.members.double()
    by_hand = ((r - r.mean(0)) ** 2).sum(0) / 4  # ddof = 0
    torch.testing.assert_close(pred.var.double(), by_hand, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(pred.var.double() * 4 / 3, r.var(0), atol=1e-7, rtol=1e-6)  # not the unbiased one
    assert pred.std.shape == (len(TEXTS),)
    assert ens.score([], []).members.shape == (4, 0)


# ---- head ensemble -----------------------------------------------------------------------------
def test_head_ensemble_shapes_and_independent_heads(config, tiny_bert_dir):
    frozen = HeadEnsemble.from_config(RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=0, max_length=32), EnsembleConfig(members=5))
    assert [n for n, p in frozen.named_parameters() if p.requires_grad] == ["body.head.weight"]
    batch = frozen.encoder(["q"] * 3, TEXTS[:3])
    r = frozen(batch["input_ids"], batch["attention_mask"])  # [K, B]
    assert r.shape == (5, 3)
    features = frozen.body.features(batch["input_ids"], batch["attention_mask"]).detach()  # [B, H]
    torch.testing.assert_close(r.detach(), frozen.heads.weight.detach() @ features.T)
    r[2].sum().backward()  # member 2's reward touches head 2 only
    grad = frozen.heads.weight.grad
    assert grad[2].abs().sum() > 0 and torch.count_nonzero(grad[[0, 1, 3, 4]]) == 0
    shared = HeadEnsemble.from_config(config, EnsembleConfig(members=5))
    assert shared.body.lora_modules() and shared(batch["input_ids"], batch["attention_mask"]).shape == (5, 3)


def test_head_ensemble_save_load(config, tmp_path):
    ens = HeadEnsemble.from_config(config, EnsembleConfig(members=3, seed=2))
    with torch.no_grad():
        for m in ens.body.lora_modules().values():
            m.lora_B["default"].weight.normal_()
    ens.save_pretrained(tmp_path / "h")
    again = HeadEnsemble.from_pretrained(tmp_path / "h")
    assert torch.equal(again.score(["q"] * 3, TEXTS[:3]).members, ens.score(["q"] * 3, TEXTS[:3]).members)


# ---- independent ensemble ----------------------------------------------------------------------
def test_independent_ensemble_forward_save_load_and_errors(config, tmp_path):
    ens = IndependentEnsemble.from_config(config, EnsembleConfig(members=3, seed=4))
    batch = ens.encoder(["q"] * 3, TEXTS[:3])
    with torch.no_grad():
        torch.testing.assert_close(ens(**batch), torch.stack([m(**batch) for m in ens.models]))
    assert not torch.equal(ens.models[0].head.weight, ens.models[1].head.weight)  # seeds differ
    ens.save_pretrained(tmp_path / "ind")
    assert json.loads((tmp_path / "ind" / "config.json").read_text())["bayesrm_kind"] == "independent_ensemble"
    member = RewardModel.from_pretrained(tmp_path / "ind" / "member_1")  # members load on their own
    assert torch.equal(member.head.weight, ens.models[1].head.weight)
    again = IndependentEnsemble.from_pretrained(tmp_path / "ind")
    assert torch.equal(again.score(["q"] * 3, TEXTS[:3]).members, ens.score(["q"] * 3, TEXTS[:3]).members)
    shutil.copytree(tmp_path / "ind" / "member_2", tmp_path / "ind" / "member_3")
    with pytest.raises(CheckpointError, match="more member directories"):
        IndependentEnsemble.from_pretrained(tmp_path / "ind")
    shutil.rmtree(tmp_path / "ind" / "member_3")
    shutil.rmtree(tmp_path / "ind" / "member_1")
    with pytest.raises(CheckpointError, match="member_1"):
        IndependentEnsemble.from_pretrained(tmp_path / "ind")
    with pytest.raises(ValueError, match="different reward-model config"):
        IndependentEnsemble([ens.models[0], RewardModel.from_config(RewardModelConfig(backbone=config.backbone, lora_r=3, max_length=32))])


# ---- bootstrap weights -------------------------------------------------------------------------
def test_bootstrap_weights_are_fixed_per_pair_and_poisson(config):
    ens = HeadEnsemble.from_config(config, EnsembleConfig(members=4, bootstrap=True, seed=7))
    index = torch.arange(10_000)
    w = ens.member_weights(index)  # [K, N]
    assert w.shape == (4, 10_000)
    perm = torch.randperm(10_000)
    torch.testing.assert_close(ens.member_weights(index[perm]), w[:, perm])  # independent of batching
    assert abs(float(w.mean()) - 1) < 0.03 and abs(float(w.var()) - 1) < 0.05  # Poisson(1)
    assert abs(float((w == 0).float().mean()) - torch.exp(torch.tensor(-1.0))) < 0.02
    assert not torch.equal(w[0], w[1])
    assert HeadEnsemble.from_config(config, EnsembleConfig(members=4)).member_weights(index) is None


# ---- factory and trainer integration ----------------------------------------------------------
def test_build_model_every_method(config):
    kinds = {"map": "reward_model", "heads": "head_ensemble", "lora-ensemble": "lora_ensemble", "independent": "independent_ensemble"}
    batch = RewardModel.from_config(config).encoder(["q"] * 2, TEXTS[:2])
    for method, kind in kinds.items():
        model = build_model(method, config, members=2, top_layers=1 if method == "lora-ensemble" else None)
        assert model.KIND == kind
        assert model(**batch).shape == ((2,) if method == "map" else (2, 2))
    with pytest.raises(ValueError, match="diversity applies"):
        build_model("heads", config, diversity=0.1)
    with pytest.raises(ValueError, match="method must be"):
        build_model("bagging", config)
    with pytest.raises(ValueError, match="two-stage"):
        build_model("two-stage", config)


@pytest.mark.parametrize("target", ["members", "mean"])
def test_lora_ensemble_trains_with_either_target(config, toy_pairs, tmp_path, target):
    pairs = _pairs(toy_pairs)
    model = build_model("lora-ensemble", config, members=3, diversity=0.05, seed=0, bootstrap=target == "members")
    before = _pair_losses(model, pairs, target)
    trainer = train_reward_model(model, pairs, _training(tmp_path, ensemble_target=target))
    after = _pair_losses(model, pairs, target)
    assert after < before - 0.05, (before, after)
    logged = [row for row in trainer.state.log_history if "diversity" in row]
    assert logged and all(1.0 <= row["diversity"] <= 6**0.5 + 1e-6 for row in logged)  # 1 <= D <= sqrt(K r)
    assert all(f"acc_member_{k}" in logged[0] for k in range(3))


def test_independent_and_two_stage_training(config, toy_pairs, tmp_path):
    pairs = _pairs(toy_pairs)
    fresh = build_model("independent", config, members=2, seed=0)
    ind = train_model("independent", config, pairs, _training(tmp_path, max_steps=2), members=2, seed=0)
    for k in range(2):
        assert not torch.equal(ind.models[k].head.weight, fresh.models[k].head.weight)
    two = train_model("two-stage", config, pairs, _training(tmp_path, max_steps=2), members=2, top_layers=1)
    assert isinstance(two, LoRAEnsemble) and two.base_lora
    two.save_pretrained(tmp_path / "two")
    again = LoRAEnsemble.from_pretrained(tmp_path / "two")
    assert torch.equal(again.score(["q"] * 3, TEXTS[:3]).members, two.score(["q"] * 3, TEXTS[:3]).members)
