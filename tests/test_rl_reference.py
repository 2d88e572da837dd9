"""Log-sigmoid rewards in RL: per-prompt reference levels from reference-policy samples, drawn once
per prompt, across new prompts and resume; AND sums of several proxies (tiny random Llama, CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from bayesrm.alignment.rl import RLConfig, RLTrainer
from bayesrm.rewards import parse_reward
from bayesrm.alignment.rl.reference import ReferenceLevels, reference_sampler
from bayesrm.alignment.rl.reward_fn import apply_reward
from test_rl_train import PROMPTS, WordScorer, one_thread, tiny_cfg, tiny_lm, tokenizer  # noqa: F401 (fixtures)

SPEC = "std:k=0.5|log_sigmoid:q=0.75"


def run(tok, out, proxy=None, **kw) -> RLTrainer:
    cfg = tiny_cfg(**{"reward": SPEC, "prompts_per_step": 2, "samples_per_prompt": 2, "reference_samples": 3, **kw})
    return RLTrainer(cfg, tiny_lm(tok), tok, proxy or WordScorer(), parse_reward(cfg.reward), PROMPTS, out)


def expected_levels(tok, reward_spec=SPEC, q=0.75, n=3):
    """Independently: sample the *untrained* model (a fresh copy) with the shared seeded sampler, score, take quantiles."""
    sample = reference_sampler(tiny_lm(tok), tok, max_new_tokens=8, seed=0, disable_adapter=False)
    texts = sample(list(PROMPTS), n)
    base = parse_reward(reward_spec.split("|log_sigmoid")[0])
    out = {}
    for prompt, row in zip(PROMPTS, texts):
        r = base(WordScorer().score([prompt] * n, row))
        out[prompt] = float(torch.quantile(r.double(), q))
    return out, texts


def test_log_sigmoid_rl_uses_reference_levels_of_every_prompt_across_steps_and_resume(tokenizer, tmp_path):
    kw = dict(steps=4, save_every=2, update_epochs=2)
    straight = run(tokenizer, tmp_path / "a", **kw)
    records = straight.train()  # 6 prompts, 2 a step: steps 1-3 each meet new prompts (the old code raised KeyError at step 2)
    assert [r["reference_new_prompts"] for r in records] == [2, 2, 2, 0]
    levels = straight.reward.reference.quantile(0.75)
    want, texts = expected_levels(tokenizer)
    assert set(levels) == set(PROMPTS)
    for p in PROMPTS:
        assert levels[p] == pytest.approx(want[p], abs=1e-6), p
    assert len(set(round(v, 6) for v in want.values())) > 1  # the levels differ by prompt: the check can fail
    logged = [json.loads(line) for line in (tmp_path / "a" / "reference.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged] == [1, 1, 2, 2, 3, 3]
    assert {r["prompt"]: r["responses"] for r in logged} == dict(zip(PROMPTS, texts))

    # the trained policy samples differently: refitting on it (what a resumed run used to do) would be wrong
    trained = reference_sampler(straight.policy.model, tokenizer, max_new_tokens=8, seed=0, disable_adapter=False)
    assert trained(list(PROMPTS), 3) != texts

    first = run(tokenizer, tmp_path / "b", **kw)
    first.train(steps=2)
    first.train_step()  # a step past the checkpoint, redone after resume
    resumed = run(tokenizer, tmp_path / "b", **kw)
    assert resumed.resume() == 2
    assert ReferenceLevels.known(resumed.reward) == {r["prompt"] for r in logged[:4]}  # restored from the checkpoint
    assert resumed.reward.reference.quantile(0.75) == {p: levels[p] for p in ReferenceLevels.known(resumed.reward)}
    resumed.train()
    assert resumed.reward.reference.quantile(0.75) == pytest.approx(levels, abs=0)

    def strip(path):
        return [{k: v for k, v in json.loads(line).items() if not k.startswith("time_")} for line in path.read_text().splitlines()]

    assert strip(tmp_path / "a" / "log.jsonl") == strip(tmp_path / "b" / "log.jsonl")
    assert strip(tmp_path / "a" / "reference.jsonl") == strip(tmp_path / "b" / "reference.jsonl")


def test_and_sum_of_two_proxies_in_rl(tokenizer, tmp_path):
    """'A + B': one log_sigmoid term per proxy, each with its own reference levels; the logged reward is their sum."""
    class Shifted(WordScorer):
        def score(self, prompts, responses, batch_size=32, progress=False):
            pred = super().score(prompts, responses)
            return type(pred)(mean=-pred.mean, var=pred.var, members=-pred.members)

    spec = "log_sigmoid:q=0.5 + std:k=1|log_sigmoid:q=0.5"
    tr = run(tokenizer, tmp_path, proxy=[WordScorer(), Shifted()], reward=spec, steps=2)
    records = tr.train()
    assert all("proxy_1" in r and "uncertainty_1" in r for r in records)
    a, b = tr.reward.rewards
    assert set(a.reference.quantile(0.5)) == set(b.reference.quantile(0.5)) == set(ReferenceLevels.known(tr.reward))
    assert len(ReferenceLevels.known(tr.reward)) == 4
    keyed = sorted(ReferenceLevels.known(tr.reward))[:2]
    responses = ["good good", "bad"]
    preds = [WordScorer().score(keyed, responses), Shifted().score(keyed, responses)]
    total = apply_reward(tr.reward, preds, keyed)
    torch.testing.assert_close(total, (a(preds[0], keyed) + b(preds[1], keyed)).float())
    assert not torch.allclose(a.levels(keyed, total), b.levels(keyed, total))  # each term has its own levels
    assert torch.all(torch.tensor([r["reward"] for r in records]) <= 0)  # a sum of log-probabilities


def test_log_sigmoid_without_reference_samples_is_refused_clearly():
    with pytest.raises(ValueError, match="reference levels"):
        apply_reward(parse_reward(SPEC), WordScorer().score(["a"], ["good"]), ["a"])
    with pytest.raises(ValueError, match="terms"):
        apply_reward(parse_reward("mean + mean + mean"), [WordScorer().score(["a"], ["x"])] * 2, ["a"])
    with pytest.raises(ValueError, match="reference_samples"):
        RLConfig(reference_samples=0)


def test_trl_adapter_draws_reference_levels_per_new_prompt_and_restores_them(tokenizer, tmp_path):
    from bayesrm.alignment.rl import trl_reward_func

    state = tmp_path / "reference_state.json"
    sampler = reference_sampler(tiny_lm(tokenizer), tokenizer, max_new_tokens=8, seed=0, disable_adapter=False)
    calls = []

    def counting(prompts, n):
        calls.append(list(prompts))
        return sampler(prompts, n)

    func = trl_reward_func(WordScorer(), SPEC, reference=ReferenceLevels(counting, WordScorer(), 3, state_path=state))
    want, _ = expected_levels(tokenizer)
    first = func(prompts=list(PROMPTS[:2]) * 2, completions=["good", "bad", "good good", "x"])
    func(prompts=list(PROMPTS[1:4]), completions=["good"] * 3)
    assert calls == [list(PROMPTS[:2]), list(PROMPTS[2:4])]  # each prompt sampled once
    reward = parse_reward(SPEC)
    reward.load_state_dict(__import__("json").loads(state.read_text())["state"])  # what was saved
    assert reward.reference.quantile(0.75) == pytest.approx({p: want[p] for p in PROMPTS[:4]}, abs=1e-6)

    def refuse(prompts, n):
        raise AssertionError(f"resampled {prompts}")

    resumed = trl_reward_func(WordScorer(), SPEC, reference=ReferenceLevels(refuse, WordScorer(), 3, state_path=state))
    assert resumed(prompts=list(PROMPTS[:2]) * 2, completions=["good", "bad", "good good", "x"]) == pytest.approx(first, abs=1e-6)
