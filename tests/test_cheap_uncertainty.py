"""MC dropout and WARM (weight averaging) against hand-made references on tiny random models."""

from __future__ import annotations

import torch

from bayesrm.models.reward_model import RewardModel, RewardModelConfig
from bayesrm.registry import load_scorer
from bayesrm.uncertainty.mc_dropout import MCDropout
from bayesrm.uncertainty.warm import average_reward_models

PROMPTS = ["how are you", "say hi", "tell me a joke", "what is two plus two"] * 2
RESPONSES = ["fine thanks", "hi there friend", "no", "four is the answer", "good", "bad bad", "ok", "maybe five"]


def tiny(tiny_bert_dir, seed: int, **kw) -> RewardModel:
    config = RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=24, lora_dropout=0.1, **kw)
    model = RewardModel.from_config(config, seed=seed)
    with torch.no_grad():  # LoRA B starts at zero: give it weights so the adapters matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return model


def test_mc_dropout_variance_is_zero_without_dropout_and_grows_with_it(tiny_bert_dir):
    model = tiny(tiny_bert_dir, seed=0)
    point = model.score(PROMPTS, RESPONSES).mean
    zero = MCDropout(model, samples=6, dropout=0.0).score(PROMPTS, RESPONSES)
    torch.testing.assert_close(zero.var, torch.zeros_like(zero.var), atol=1e-10, rtol=0)
    torch.testing.assert_close(zero.mean, point, atol=1e-5, rtol=1e-5)  # dropout 0 is the point model
    variances = [float(MCDropout(model, samples=24, dropout=p).score(PROMPTS, RESPONSES).var.mean()) for p in (0.05, 0.2, 0.5)]
    assert 0 < variances[0] < variances[1] < variances[2]
    # the model's own dropout settings are restored after scoring
    assert all(m.p in (0.0, 0.1) for m in model.modules() if isinstance(m, torch.nn.Dropout))
    torch.testing.assert_close(model.score(PROMPTS, RESPONSES).mean, point)


def test_mc_dropout_is_reproducible_and_round_trips(tiny_bert_dir, tmp_path):
    mc = MCDropout(tiny(tiny_bert_dir, seed=1), samples=5, dropout=0.3, seed=7)
    a = mc.score(PROMPTS, RESPONSES, batch_size=3)
    b = mc.score(PROMPTS, RESPONSES, batch_size=3)
    assert a.members.shape == (5, len(PROMPTS))
    torch.testing.assert_close(a.members, b.members)
    torch.testing.assert_close(a.var, a.members.var(0, unbiased=False))
    mc.save_pretrained(tmp_path / "mc")
    loaded = load_scorer(tmp_path / "mc")
    assert isinstance(loaded, MCDropout) and loaded.config == mc.config
    torch.testing.assert_close(loaded.score(PROMPTS, RESPONSES, batch_size=3).members, a.members)


def test_mc_dropout_config_sections_are_checked_key_by_key(tiny_bert_dir, tmp_path):
    """A tampered (re-signed) mc_dropout section of config.json: each bad key is a CheckpointError naming file and key."""
    import pytest

    from bayesrm.models.checkpoint import CheckpointError, update_meta

    mc = MCDropout(tiny(tiny_bert_dir, seed=1), samples=3, dropout=0.3, seed=7)
    mc.save_pretrained(tmp_path / "mc")
    where = f"{tmp_path / 'mc' / 'config.json'}: mc_dropout"
    good = {"samples": 3, "dropout": 0.3, "seed": 7}
    cases = {
        "unknown": ({**good, "sample": 4}, f"{where}.sample: unknown key (did you mean 'samples'?)"),
        "missing": ({"samples": 3, "dropout": 0.3}, f"{where}: missing key 'seed'"),
        "text": ({**good, "samples": "3"}, f"{where}.samples: expected int, got str ('3')"),
        "bool": ({**good, "seed": True}, f"{where}.seed: expected int, got bool"),
        "range": ({**good, "dropout": 1.5}, f"{where}: dropout must be in [0, 1)"),
        "not an object": ([3, 0.3, 7], f"{where}: expected an object, got list"),
    }
    for name, (section, message) in cases.items():
        update_meta(tmp_path / "mc", mc_dropout=section)
        with pytest.raises(CheckpointError) as info:
            MCDropout.from_pretrained(tmp_path / "mc")
        assert message in str(info.value), (name, str(info.value))
    update_meta(tmp_path / "mc", mc_dropout={**good, "dropout": 0})  # an int where a float is declared: read as the float
    loaded = load_scorer(tmp_path / "mc")
    assert loaded.config == type(mc.config)(samples=3, dropout=0.0, seed=7) and isinstance(loaded.config.dropout, float)


def test_warm_equals_the_hand_averaged_weights(tiny_bert_dir, tmp_path):
    models = [tiny(tiny_bert_dir, seed=s) for s in (0, 1, 2)]
    warm = average_reward_models(models, weights=[1.0, 2.0, 1.0])
    states = [m.saved_state_dict() for m in models]
    for name, tensor in warm.saved_state_dict().items():
        expected = (states[0][name] + 2 * states[1][name] + states[2][name]) / 4
        torch.testing.assert_close(tensor, expected)
    # the inputs are untouched, and averaging one model with itself changes nothing
    torch.testing.assert_close(models[0].saved_state_dict()["head.weight"], states[0]["head.weight"])
    same = average_reward_models([models[0], models[0]])
    torch.testing.assert_close(same.score(PROMPTS, RESPONSES).mean, models[0].score(PROMPTS, RESPONSES).mean)
    warm.save_pretrained(tmp_path / "warm")
    torch.testing.assert_close(load_scorer(tmp_path / "warm").score(PROMPTS, RESPONSES).mean, warm.score(PROMPTS, RESPONSES).mean)


def test_warm_refuses_models_of_different_layouts(tiny_bert_dir):
    import pytest

    with pytest.raises(ValueError, match="different config"):
        average_reward_models([tiny(tiny_bert_dir, seed=0), tiny(tiny_bert_dir, seed=0, lora_alpha=4)])
    with pytest.raises(ValueError, match="non-negative"):
        average_reward_models([tiny(tiny_bert_dir, seed=0)] * 2, weights=[1.0, -1.0])


# ---- trained through the factory ---------------------------------------------------------------
def _training(tmp_path, sub: str, **kw):
    from bayesrm.training.trainer import RewardTrainingConfig

    args = dict(output_dir=str(tmp_path / sub), learning_rate=5e-2, per_device_train_batch_size=8, max_steps=4,
                logging_steps=1, use_cpu=True, seed=3, disable_tqdm=True, save_strategy="no")
    return RewardTrainingConfig(**{**args, **kw})


def test_train_model_warm_averages_members_of_one_init_trained_on_their_own_data_orders(tiny_bert_dir, toy_pairs, tmp_path):
    from bayesrm.data.schema import PreferencePair
    from bayesrm.training.trainer import train_reward_model
    from bayesrm.uncertainty.factory import train_model

    pairs = [PreferencePair(p, c, r) for p, c, r in toy_pairs]
    config = RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=24)
    warm = train_model("warm", config, pairs, _training(tmp_path, "warm"), members=2, seed=5)
    assert isinstance(warm, RewardModel)
    # by hand: both members start from the init of seed 5; member k trains with trainer seed 3 + k
    states = []
    for k in range(2):
        member = RewardModel.from_config(config, seed=5)
        train_reward_model(member, pairs, _training(tmp_path, f"hand_{k}", seed=3 + k))
        states.append(member.saved_state_dict())
    assert not torch.allclose(states[0]["head.weight"], states[1]["head.weight"])  # data order matters
    for name, tensor in warm.saved_state_dict().items():
        torch.testing.assert_close(tensor, (states[0][name] + states[1][name]) / 2, rtol=1e-5, atol=1e-6)


def test_train_model_mc_dropout_trains_with_its_dropout(tiny_bert_dir, toy_pairs, tmp_path):
    from bayesrm.data.schema import PreferencePair
    from bayesrm.uncertainty.factory import train_model
    from bayesrm.uncertainty.mc_dropout import MCDropoutConfig

    pairs = [PreferencePair(p, c, r) for p, c, r in toy_pairs]
    config = RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=24)  # disable_dropout defaults to True
    point = train_model("map", config, pairs, _training(tmp_path, "map"), seed=1)
    off = train_model("mc-dropout", config, pairs, _training(tmp_path, "off"), seed=1,
                      mc_dropout=MCDropoutConfig(samples=3, dropout=0.0))
    on = train_model("mc-dropout", config, pairs, _training(tmp_path, "on"), seed=1,
                     mc_dropout=MCDropoutConfig(samples=3, dropout=0.3))
    assert isinstance(on, MCDropout) and on.config.samples == 3 and on.model.config.disable_dropout is False
    # dropout 0 trains exactly the MAP model; dropout 0.3 is on during training, so the weights differ
    torch.testing.assert_close(off.model.saved_state_dict()["head.weight"], point.saved_state_dict()["head.weight"])
    assert not torch.allclose(on.model.saved_state_dict()["head.weight"], point.saved_state_dict()["head.weight"])
    assert float(on.score(PROMPTS, RESPONSES).var.min()) > 0
