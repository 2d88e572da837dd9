"""RewardModel: encoding, pooling, training, save/load and checkpoint errors on tiny random backbones."""

import json

import pytest
import torch

from bayesrm.data.schema import PreferencePair
from bayesrm.models import CheckpointError, RewardModel, RewardModelConfig
from bayesrm.models.reward_model import pool_hidden
from bayesrm.training import RewardTrainingConfig, train_reward_model


def make(backbone_dir, **kw) -> RewardModel:
    return RewardModel.from_config(RewardModelConfig(backbone=str(backbone_dir), lora_r=2, max_length=24, **kw), seed=0)


def as_pairs(toy_pairs):
    return [PreferencePair(p, c, r) for p, c, r in toy_pairs]


def fit(model, pairs, tmp_path, steps=30, **kw):
    cfg = RewardTrainingConfig(output_dir=str(tmp_path / "run"), max_steps=steps, learning_rate=2e-2,
                               per_device_train_batch_size=8, seed=0, use_cpu=True, logging_steps=5, **kw)
    return train_reward_model(model, pairs, cfg)


def test_encoder_keeps_response_and_trims_prompt_from_left(tiny_bert_dir):
    model = make(tiny_bert_dir)
    tok = model.tokenizer
    prompt = " ".join(f"w{i}" for i in range(40))
    ids = model.encoder.encode_one(prompt, "good answer")
    assert len(ids) == 24
    text = tok.decode(ids)
    assert text.endswith("good answer [SEP]") and "w39" in text and "w0 " not in text
    # an over-long response is cut at the end but still leads its segment
    ids = model.encoder.encode_one("hello", " ".join(["good"] * 50))
    assert len(ids) == 24 and ids[-1] == tok.sep_token_id


def test_decoder_uses_last_token_and_eos(tiny_llama_dir):
    model = make(tiny_llama_dir)
    assert model.is_decoder and model.pooling == "last"
    ids = model.encoder.encode_one("hello", "good")
    assert ids[-1] == model.tokenizer.eos_token_id


def test_pooling_against_manual_values():
    hidden = torch.arange(2 * 3 * 2, dtype=torch.float).reshape(2, 3, 2)
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    assert torch.equal(pool_hidden(hidden, mask, "cls"), hidden[:, 0])
    assert torch.equal(pool_hidden(hidden, mask, "last"), torch.stack([hidden[0, 1], hidden[1, 2]]))
    assert torch.allclose(pool_hidden(hidden, mask, "mean"), torch.stack([hidden[0, :2].mean(0), hidden[1, 1:].mean(0)]))


def test_padding_does_not_change_scores(tiny_llama_dir):
    model = make(tiny_llama_dir)
    alone = model.score(["hello"], ["good"]).mean
    batched = model.score(["hello", "hello there what"], ["good", "it is a long answer with many words"]).mean
    assert torch.allclose(alone, batched[:1], atol=1e-5)


@pytest.mark.parametrize("backbone", ["tiny_bert_dir", "tiny_llama_dir"])
def test_training_learns_and_freezes_backbone(backbone, request, toy_pairs, tmp_path):
    model = make(request.getfixturevalue(backbone))
    pairs = as_pairs(toy_pairs)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or n.startswith("head.") for n in trainable)
    trainer = fit(model, pairs, tmp_path)
    logs = [h for h in trainer.state.log_history if "accuracy" in h]
    assert logs and {"loss", "accuracy", "margin", "reward_mean"} <= set(logs[-1])
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"frozen {n} changed"
        else:
            assert not torch.equal(p, trainable[n]), f"trainable {n} did not change"
    pred_w = model.score([p.prompt for p in pairs], [p.chosen for p in pairs]).mean
    pred_l = model.score([p.prompt for p in pairs], [p.rejected for p in pairs]).mean
    assert (pred_w > pred_l).float().mean() > 0.9


def test_seeded_runs_are_identical(tiny_bert_dir, toy_pairs, tmp_path):
    states = []
    for run in range(2):
        model = make(tiny_bert_dir)
        fit(model, as_pairs(toy_pairs), tmp_path / str(run), steps=4)
        states.append(model.saved_state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_resume_from_checkpoint_matches_uninterrupted(tiny_bert_dir, toy_pairs, tmp_path):
    pairs = as_pairs(toy_pairs)
    full = make(tiny_bert_dir)
    fit(full, pairs, tmp_path / "full", steps=6)
    interrupted = make(tiny_bert_dir)
    fit(interrupted, pairs, tmp_path / "part", steps=6, save_strategy="steps", save_steps=3)
    resumed = make(tiny_bert_dir)
    cfg = RewardTrainingConfig(output_dir=str(tmp_path / "part" / "run"), max_steps=6, learning_rate=2e-2,
                               per_device_train_batch_size=8, seed=0, use_cpu=True)
    train_reward_model(resumed, pairs, cfg, resume_from_checkpoint=str(tmp_path / "part" / "run" / "checkpoint-3"))
    a, b = full.saved_state_dict(), resumed.saved_state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.mark.parametrize("backbone", ["tiny_bert_dir", "tiny_llama_dir"])
def test_save_load_reproduces_scores(backbone, request, toy_pairs, tmp_path):
    model = make(request.getfixturevalue(backbone))
    fit(model, as_pairs(toy_pairs), tmp_path, steps=3)
    prompts, responses = [p for p, _, _ in toy_pairs], [c for _, c, _ in toy_pairs]
    before = model.score(prompts, responses).mean
    model.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in (tmp_path / "saved").iterdir()) == ["config.json", "model.safetensors"]
    after = RewardModel.from_pretrained(tmp_path / "saved").score(prompts, responses).mean
    assert torch.equal(before, after)


def test_checkpoint_errors(tiny_bert_dir, tiny_llama_dir, tmp_path):
    model = make(tiny_bert_dir)
    model.save_pretrained(tmp_path / "ok")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        RewardModel.from_pretrained(tmp_path / "missing")
    corrupt = tmp_path / "corrupt"
    model.save_pretrained(corrupt)
    (corrupt / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="SHA-256 does not match"):
        RewardModel.from_pretrained(corrupt)
    bad_json = tmp_path / "bad_json"
    model.save_pretrained(bad_json)
    (bad_json / "config.json").write_text("{ nope")
    with pytest.raises(CheckpointError, match="corrupt JSON"):
        RewardModel.from_pretrained(bad_json)
    # weights of one backbone under a config naming another
    mismatched = tmp_path / "mismatched"
    model.save_pretrained(mismatched)
    meta = json.loads((mismatched / "config.json").read_text())
    meta["model"]["backbone"] = str(tiny_llama_dir)
    (mismatched / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="edited after saving"):
        RewardModel.from_pretrained(mismatched)
    meta["format_version"] = 1  # a checkpoint from before checksums: the structural checks still catch it
    del meta["weights_sha256"]
    (mismatched / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not match|different backbone"):
        RewardModel.from_pretrained(mismatched)
    rank = tmp_path / "rank"
    model.save_pretrained(rank)
    meta = json.loads((rank / "config.json").read_text())
    meta["model"]["lora_r"] = 4
    meta["format_version"] = 1
    del meta["weights_sha256"]
    (rank / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="shape"):
        RewardModel.from_pretrained(rank)


def test_bf16_training_leaves_no_autocast_on_the_model(tiny_bert_dir, toy_pairs, tmp_path):
    """accelerate wraps forward in bf16 autocast for training; scoring afterwards must run in fp32 again."""
    model = make(tiny_bert_dir)
    fit(model, as_pairs(toy_pairs)[:16], tmp_path, steps=1, bf16=True)
    assert "_original_forward" not in model.__dict__  # accelerate's wrapper was removed
    fresh = make(tiny_bert_dir)
    fresh.load_state_dict(model.state_dict())
    prompts, responses = [p for p, _, _ in toy_pairs[:6]], [c for _, c, _ in toy_pairs[:6]]
    got, want = model.score(prompts, responses).mean, fresh.score(prompts, responses).mean
    assert torch.equal(got, want)  # bit-identical to an fp32 model with the same weights (bf16 differs by ~1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not torch.equal(fresh.score(prompts, responses).mean, want)  # the check can fail
