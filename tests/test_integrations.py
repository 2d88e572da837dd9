"""bayesrm.integrations: verl compute_score, the OpenRLHF reward_func file, and the TRL reward function
(inside a real GRPOTrainer step), each against a real loopback server or in-process."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from bayesrm.alignment.rl.monitor import TRL_KEYS, disagreement
from bayesrm.integrations import verl as verl_integration
from bayesrm.integrations.trl import reward_func
from bayesrm.rewards import parse_reward
from bayesrm.serve.app import create_app
from bayesrm.serve.config import ServeConfig
from bayesrm.serve.state import ServeState
from bayesrm.serve.template import ChatTemplate
from serve_util import CHATML, chatml, serving
from test_rl_train import WordScorer, tiny_lm

PROMPTS = ["hello world", "the cat is", "a dog", "please help"]
RESPONSES = ["good good", "good bad", "bad", "it is good"]


@pytest.fixture
def url(monkeypatch):
    app = create_app(WordScorer(), ServeState(parse_reward("std:k=1")), ChatTemplate.from_jinja(CHATML), ServeConfig(max_wait_ms=1))
    with serving(app) as base:
        monkeypatch.setenv("BAYESRM_REWARD_URL", base)
        verl_integration._CLIENTS.clear()
        yield base


def expected_std_reward(prompts, responses):
    pred = WordScorer().score(prompts, responses)
    return (pred.mean - pred.std).tolist(), pred.mean.tolist(), pred.std.tolist()


def test_verl_compute_score_calls_the_server(url):
    rewards, means, stds = expected_std_reward(PROMPTS, RESPONSES)
    one = verl_integration.compute_score("chitchat", RESPONSES[0], None, {"prompt": PROMPTS[0]})
    assert one["score"] == pytest.approx(rewards[0], abs=1e-6) and one["reward_mean"] == pytest.approx(means[0], abs=1e-6)
    batch = verl_integration.compute_score_batch(
        data_sources=["x"] * 4, solution_strs=RESPONSES, ground_truths=[None] * 4, extra_infos=[{"prompt": p} for p in PROMPTS]
    )
    assert [b["score"] for b in batch] == pytest.approx(rewards, abs=1e-6)
    assert [b["reward_std"] for b in batch] == pytest.approx(stds, abs=1e-6)
    with pytest.raises(ValueError, match="extra_info has no 'prompt'"):
        verl_integration.compute_score("x", "resp", None, {"question": "q"})


def test_verl_compute_score_in_process_keeps_up_state():
    compute = verl_integration.make_compute_score(WordScorer(), "up:beta2=1")
    first = compute("x", RESPONSES[:2], None, [{"prompt": p} for p in PROMPTS[:2]])
    second = compute("x", RESPONSES[2], None, {"prompt": PROMPTS[2]})
    reward = parse_reward("up:beta2=1")
    reward(WordScorer().score(PROMPTS[:2], RESPONSES[:2]))
    expected = reward(WordScorer().score(PROMPTS[2:3], RESPONSES[2:3]))
    assert [f["score"] for f in first] and second["score"] == pytest.approx(expected.item(), abs=1e-6)


def test_openrlhf_reward_func_file(url):
    from bayesrm.integrations import openrlhf_reward_func

    spec = importlib.util.spec_from_file_location("reward_func_file", openrlhf_reward_func.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # as OpenRLHF loads --remote_rm_url files
    rendered = [chatml([{"role": "user", "content": p}]) for p in PROMPTS]
    out = module.reward_func([r + resp + "<|im_end|>" for r, resp in zip(rendered, RESPONSES)], rendered, [None] * 4)
    rewards, means, _ = expected_std_reward([[{"role": "user", "content": p}] for p in PROMPTS], RESPONSES)
    assert isinstance(out["rewards"], torch.Tensor) and out["rewards"].tolist() == pytest.approx(rewards, abs=1e-6)
    assert out["scores"].tolist() == pytest.approx(torch.sigmoid(torch.tensor(rewards)).tolist(), abs=1e-6)
    assert out["extra_logs"]["reward_mean"].tolist() == pytest.approx(means, abs=1e-6)


def test_trl_callable_against_the_server_logs_mean_and_std(url):
    metrics, columns = {}, {}
    f = reward_func(url, name="rm")
    out = f(prompts=PROMPTS, completions=[[{"role": "assistant", "content": r}] for r in RESPONSES], completion_ids=None,
            log_metric=lambda k, v: metrics.setdefault(k, v), log_extra=lambda k, v: columns.setdefault(k, v))
    rewards, means, stds = expected_std_reward(PROMPTS, RESPONSES)
    assert out == pytest.approx(rewards, abs=1e-6)
    assert f.__name__ == "rm"  # what TRL logs the reward under; the metrics keep the one bayesrm/ scheme
    assert metrics["bayesrm/proxy"] == pytest.approx(sum(means) / 4)
    assert metrics["bayesrm/uncertainty"] == pytest.approx(sum(stds) / 4)
    assert metrics["bayesrm/disagreement"] == pytest.approx(disagreement(WordScorer().score(PROMPTS, RESPONSES)), abs=1e-6)
    assert columns["bayesrm/proxy"] == pytest.approx(means) and columns["bayesrm/uncertainty"] == pytest.approx(stds)


class RecordingScorer(WordScorer):
    def __init__(self):
        self.calls = []

    def score(self, prompts, responses, batch_size=32, progress=False):
        self.calls.append((list(prompts), list(responses)))
        return super().score(prompts, responses, batch_size, progress)


def test_trl_callable_logs_inside_a_grpo_trainer_step(tiny_tokenizer_dir, tmp_path):
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    from transformers import AutoTokenizer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
        tok.bos_token, tok.eos_token = "<s>", "</s>"
        scorer = RecordingScorer()
        args = trl.GRPOConfig(
            output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, num_generations=2,
            max_completion_length=6, use_cpu=True, report_to=[], logging_steps=1, save_strategy="no",
        )
        trainer = trl.GRPOTrainer(
            model=tiny_lm(tok), reward_funcs=[reward_func(scorer, "up:beta2=1")], args=args,
            train_dataset=Dataset.from_dict({"prompt": PROMPTS}), processing_class=tok,
        )
        trainer.train()
    finally:
        torch.set_num_threads(threads)
    assert len(scorer.calls) == 1
    prompts, responses = scorer.calls[0]
    pred = WordScorer().score(prompts, responses)
    logs = trainer.state.log_history[0]
    assert logs["bayesrm/proxy"] == pytest.approx(pred.mean.mean().item(), abs=1e-6)
    assert logs["bayesrm/uncertainty"] == pytest.approx(pred.std.mean().item(), abs=1e-6)
    assert logs["bayesrm/u_bar"] == pytest.approx(pred.std.mean().item(), abs=1e-6)  # one batch so far
    spread = disagreement(pred)  # None when a member is constant over the batch (then nothing is logged)
    assert logs.get("bayesrm/disagreement") == (None if spread is None else pytest.approx(spread, abs=1e-6))
    # the names the reward-hacking monitor reads from a TRL log are there (gold: none given; kl: TRL logs it with beta > 0)
    assert {TRL_KEYS[s] for s in ("sigma", "proxy", "length")} <= set(logs)
    native = parse_reward("up:beta2=1")(pred)
    assert logs["rewards/bayesrm_up/mean"] == pytest.approx(native.mean().item(), abs=1e-6)
