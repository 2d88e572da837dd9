"""PPO / RLOO end to end on a tiny random Llama: rollouts, learning, exact resume, TRL adapter, CLI."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from bayesrm.alignment.rl import RLConfig, RLTrainer, reward_callable, sample_rollout, trl_reward_func
from bayesrm.rewards import parse_reward
from bayesrm.models.reward_model import RewardModel, RewardModelConfig
from bayesrm.types import RewardPrediction

@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread (and do not fight other jobs for the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


PROMPTS = ["hello world", "what do you think", "the cat is", "a dog", "please help", "how are you"]


class WordScorer:
    """A 3-member 'ensemble' rewarding the fraction of the word 'good' in the response."""

    def score(self, prompts, responses, batch_size=32, progress=False):
        assert len(prompts) == len(responses)
        frac = torch.tensor([sum(w == "good" for w in r.split()) / max(1, len(r.split())) for r in responses])
        n = torch.tensor([float(len(r.split())) for r in responses])
        return RewardPrediction.from_members(torch.stack([frac, 2 * frac, 0.5 * frac + 0.05 * n]))


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tok.bos_token, tok.eos_token = "<s>", "</s>"
    return tok


def tiny_lm(tok) -> LlamaForCausalLM:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=128, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
    )
    return LlamaForCausalLM(cfg).eval()


def tiny_cfg(**kw) -> RLConfig:
    base = dict(
        prompts_per_step=4, samples_per_prompt=4, max_new_tokens=8, lr=3e-2, lora_r=4,
        target_modules=["q_proj", "v_proj", "lm_head"], minibatch_size=8, kl_coef=0.0, save_every=0,
        plot=False, chat_template=False, reward="mean",
    )
    base.update(kw)
    return RLConfig(**base)


def trainer(tok, out, **kw) -> RLTrainer:
    cfg = tiny_cfg(**kw)
    return RLTrainer(cfg, tiny_lm(tok), tok, WordScorer(), parse_reward(cfg.reward, **cfg.reward_params), PROMPTS, out)


def test_rollout_logprobs_match_unpadded_forward(tokenizer, tmp_path):
    tr = trainer(tokenizer, tmp_path, steps=2)
    tr.train()  # LoRA now differs from the base, so policy and reference log-probs differ
    ro = sample_rollout(tr.policy, tokenizer, ["hello world", "what do you think of the cat"], samples_per_prompt=2,
                        max_prompt_tokens=32, max_new_tokens=6, chat_template=False)
    base = tiny_lm(tokenizer)  # the same frozen weights, built again
    R = ro.response_mask.shape[1]
    assert ro.logprobs.shape == ro.ref_logprobs.shape == ro.values.shape == (4, R)
    assert not torch.allclose(ro.logprobs, ro.ref_logprobs)
    for i in range(4):
        n = int(ro.response_mask[i].sum())
        ids = ro.input_ids[i][ro.attention_mask[i].bool()][None]  # unpadded prompt + response
        resp = ids[0, -n:]
        with torch.no_grad():
            pol = torch.log_softmax(tr.policy.model(input_ids=ids).logits[0, -n - 1 : -1], -1)
            ref = torch.log_softmax(base(input_ids=ids).logits[0, -n - 1 : -1], -1)
        torch.testing.assert_close(ro.logprobs[i, :n], pol.gather(-1, resp[:, None])[:, 0], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(ro.ref_logprobs[i, :n], ref.gather(-1, resp[:, None])[:, 0], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("algo", ["ppo", "rloo"])
def test_training_raises_the_proxy_reward(tokenizer, tmp_path, algo):
    records = trainer(tokenizer, tmp_path, algo=algo, steps=25).train()
    first = sum(r["reward"] for r in records[:5]) / 5
    last = sum(r["reward"] for r in records[-5:]) / 5
    assert last > first + 0.3, (first, last)
    assert records[-1]["kl_k3"] > records[0]["kl_k3"]  # it moved away from the reference
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == list(range(1, 26))
    for key in ("proxy", "reward", "uncertainty", "kl_k1", "kl_k3", "entropy", "response_length", "policy_loss"):
        assert all(isinstance(r[key], float) for r in logged), key
    assert ("value_loss" in logged[0]) == (algo == "ppo")


def test_kl_losses_keep_the_policy_near_the_reference(tokenizer, tmp_path):
    free = trainer(tokenizer, tmp_path / "free", steps=10).train()
    held = trainer(tokenizer, tmp_path / "held", steps=10, kl_mode="token_loss", kl_coef=50.0).train()
    seq = trainer(tokenizer, tmp_path / "seq", steps=10, kl_mode="seq_loss", kl_coef=5.0).train()
    assert "kl_sq_loss" in held[-1] and "kl_sq_loss" in seq[-1] and "kl_sq_loss" not in free[-1]
    assert held[-1]["kl_k3"] < 0.5 * free[-1]["kl_k3"], (held[-1]["kl_k3"], free[-1]["kl_k3"])
    assert seq[-1]["kl_k3"] < 0.5 * free[-1]["kl_k3"], (seq[-1]["kl_k3"], free[-1]["kl_k3"])


def test_resume_continues_identically(tokenizer, tmp_path):
    kw = dict(steps=4, save_every=2, reward="up:beta2=0.5", kl_mode="penalty", kl_coef=0.05, update_epochs=2)
    straight = trainer(tokenizer, tmp_path / "a", **kw)
    straight.train()

    first = trainer(tokenizer, tmp_path / "b", **kw)
    first.train(steps=2)
    first.train_step()  # a step after the checkpoint that the resumed run must redo
    resumed = trainer(tokenizer, tmp_path / "b", **kw)
    assert resumed.resume() == 2
    resumed.train()

    a = {n: p for n, p in straight.policy.named_parameters() if p.requires_grad}
    b = {n: p for n, p in resumed.policy.named_parameters() if p.requires_grad}
    assert a.keys() == b.keys() and any("value_head" in n for n in a)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    torch.testing.assert_close(straight.reward.state_dict(), resumed.reward.state_dict(), rtol=0, atol=0)
    assert straight.reward.stats.count > 0

    def strip(path):
        return [{k: v for k, v in json.loads(line).items() if not k.startswith("time_")}
                for line in path.read_text().splitlines()]

    assert strip(tmp_path / "a" / "log.jsonl") == strip(tmp_path / "b" / "log.jsonl")
    samples = strip(tmp_path / "a" / "samples.jsonl")
    assert samples == strip(tmp_path / "b" / "samples.jsonl")  # the redone step's samples are not doubled
    assert [r["step"] for r in samples] == [s for s in range(1, 5) for _ in range(4)]  # one per prompt (4 a step)
    assert len({r["prompt"] for r in samples[:4]}) == 4
    assert {"prompt", "response", "reward", "proxy", "sigma", "gold"} <= samples[0].keys()


def test_resume_refuses_another_algorithm(tokenizer, tmp_path):
    trainer(tokenizer, tmp_path, steps=1, algo="rloo").train()
    with pytest.raises(ValueError, match="algo"):
        trainer(tokenizer, tmp_path, steps=1, algo="ppo").resume()


@pytest.fixture(scope="module")
def tiny_rm(tiny_bert_dir):
    return RewardModel.from_config(RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=32), seed=0)


def test_trl_adapter_matches_native_scores(tiny_rm):
    prompts = ["hello world", "what do you think"]
    responses = ["it is good", "bad bad cat"]
    native = parse_reward("std:k=1")(tiny_rm.score(prompts, responses))
    func = trl_reward_func(tiny_rm, "std:k=1")
    # TRL calls reward functions with keywords, plus completion_ids and trainer extras
    out = func(prompts=prompts, completions=responses, completion_ids=[[1], [2]], trainer_state=None, log_metric=print)
    assert out == pytest.approx(native.tolist(), abs=1e-6)
    assert func.__name__ == "bayesrm_std"

    conv_prompts = [[{"role": "user", "content": p}] for p in prompts]
    conv_completions = [[{"role": "assistant", "content": r}] for r in responses]
    native_conv = tiny_rm.score(conv_prompts, responses).mean
    out_conv = trl_reward_func(tiny_rm, "mean")(prompts=conv_prompts, completions=conv_completions)
    assert out_conv == pytest.approx(native_conv.tolist(), abs=1e-6)
    assert reward_callable(tiny_rm, "mean")(prompts, responses) == pytest.approx(tiny_rm.score(prompts, responses).mean.tolist(), abs=1e-6)


def test_adapters_keep_the_up_running_mean_across_calls():
    scorer = WordScorer()
    batches = [(["a", "b"], ["good good", "no"]), (["c"], ["good w1 w2"])]
    native_reward = parse_reward("up:beta2=2")
    native = [native_reward(scorer.score(p, r)).tolist() for p, r in batches]
    func = trl_reward_func(scorer, "up:beta2=2")
    assert [func(prompts=p, completions=r) for p, r in batches] == [pytest.approx(n, abs=1e-6) for n in native]


def test_cli_runs_and_resumes_from_a_scenario_file(tokenizer, tiny_rm, tmp_path):
    from bayesrm.cli import rl as cli

    policy_dir = tmp_path / "policy"
    tiny_lm(tokenizer).save_pretrained(policy_dir)
    tokenizer.save_pretrained(policy_dir)
    tiny_rm.save_pretrained(tmp_path / "proxy")
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    (tmp_path / "scenario.yaml").write_text(
        "name: tiny\nrl:\n  policy: ./policy\n  proxy: ./proxy\n  prompts: ./prompts.txt\n  gold: vader\n"
        "  reward: mean\n  prompts_per_step: 2\n  samples_per_prompt: 2\n  max_new_tokens: 4\n  save_every: 1\n"
        "  chat_template: false\n"
    )
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    out = tmp_path / "run"
    base = ["rl", "--config", str(tmp_path / "scenario.yaml"), "--out", str(out), "--quiet", "--lora-r", "2", "--set", "lora_alpha=4"]
    args = parser.parse_args(base + ["--algo", "rloo", "--steps", "2"])
    assert args.run(args) == 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(isinstance(r["gold"], float) for r in log)
    assert (out / "reward_vs_kl.png").stat().st_size > 0 and (out / "reward_vs_step.png").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    with pytest.raises(ValueError, match="--resume"):
        args.run(parser.parse_args(base + ["--algo", "rloo", "--steps", "3"]))
    args = parser.parse_args(base + ["--algo", "rloo", "--steps", "3", "--resume"])
    assert args.run(args) == 0
    assert len((out / "log.jsonl").read_text().splitlines()) == 3


def test_config_errors_name_file_and_field(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text("rl:\n  algo: ppo\n  learning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"s\.yaml: rl\.learning_rate: unknown key"):
        RLConfig.from_yaml(path)
    path.write_text("rl:\n  steps: many\n")
    with pytest.raises(ValueError, match=r"s\.yaml: rl\.steps: expected int"):
        RLConfig.from_yaml(path)
    path.write_text("rl:\n  kl_mode: sometimes\n")
    with pytest.raises(ValueError, match=r"kl_mode: must be one of"):
        RLConfig.from_yaml(path)
    path.write_text("bon:\n  n: 4\n")
    with pytest.raises(ValueError, match="no 'rl:' section"):
        RLConfig.from_yaml(path)
    with pytest.raises(ValueError, match="RLOO needs at least 2"):
        RLConfig(algo="rloo", samples_per_prompt=1)


def test_sampler_is_the_policy_itself_no_hidden_top_k(tokenizer):
    """A model's shipped generation_config (here top_k=50) must not change what the rollout samples."""
    from bayesrm.alignment.rl.trainer import build_policy

    torch.manual_seed(0)
    model = tiny_lm(tokenizer)
    model.generation_config.top_k = 50
    policy = build_policy(model, tiny_cfg())
    ro = sample_rollout(policy, tokenizer, ["hello world"], samples_per_prompt=400, max_prompt_tokens=8,
                        max_new_tokens=1, chat_template=False, forward_batch_size=400)
    assert len(tokenizer) > 90 and ro.entropy[0, 0] > 4.4  # near-uniform over ~100 tokens
    assert len(set(ro.response_tokens[:, 0].tolist())) > 60


def test_cli_overrides_keep_set_values_unless_a_flag_is_given():
    from bayesrm.cli.main import build_parser
    from bayesrm.cli.rl import collect_overrides

    def overrides(*argv):
        return collect_overrides(build_parser().parse_args(["rl", "--config", "s.yaml", *argv]))

    assert overrides("--set", "steps=6", "kl_coef=0.1") == {"steps": 6, "kl_coef": 0.1}
    assert overrides("--set", "steps=6", "--algo", "ppo", "--steps", "3") == {"steps": 3, "algo": "ppo"}


def test_make_reward_is_a_deprecated_alias_of_parse_reward():
    from bayesrm.alignment.rl import make_reward

    with pytest.warns(DeprecationWarning, match="parse_reward"):
        old = make_reward("up", {"beta2": 0.5})
    assert old.spec() == parse_reward("up", beta2=0.5).spec() == parse_reward("up:beta2=0.5").spec()
