"""The reward server on a real loopback port with a tiny random ensemble: protocols, batching, state."""

from __future__ import annotations

import math
import threading

import httpx
import pytest
import torch

from bayesrm.models.reward_model import RewardModelConfig
from bayesrm.registry import load_scorer
from bayesrm.rewards import parse_reward
from bayesrm.serve.app import create_app
from bayesrm.serve.config import ServeConfig
from bayesrm.serve.state import ServeState
from bayesrm.serve.template import ChatTemplate, PlainSplitter
from bayesrm.uncertainty.base import EnsembleConfig
from bayesrm.uncertainty.heads import HeadEnsemble
from serve_util import CHATML, CountingScorer, chatml, serving

PROMPTS = ["what do you think", "hello there", "please help the cat", "is it good"]
RESPONSES = ["it is good", "bad", "the cat is nice and kind thanks", "i hate it", "hello world w3 w4", "sorry"]


@pytest.fixture(scope="module")
def model_dir(tiny_bert_dir, tmp_path_factory):
    ens = HeadEnsemble.from_config(RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=0, max_length=32), EnsembleConfig(members=3, seed=1))
    directory = tmp_path_factory.mktemp("serve_model") / "ens"
    ens.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def scorer(model_dir):
    return load_scorer(model_dir)


def make_app(scorer, reward="up:beta2=1", splitter=None, **config):
    cfg = ServeConfig(**{"max_wait_ms": 2.0, **config})
    state = ServeState(parse_reward(reward), reference_samples=cfg.reference_samples)
    if cfg.state_dir is not None and (cfg.state_dir / "config.json").is_file():
        state.load(cfg.state_dir)
    return create_app(scorer, state, splitter or ChatTemplate.from_jinja(CHATML), cfg, model_name="tiny")


def messages(prompt):
    return [{"role": "user", "content": prompt}]


def test_score_equals_direct_scoring_and_the_up_formula(scorer):
    prompts = [messages(PROMPTS[i % 4]) for i in range(6)]
    direct = scorer.score(prompts, RESPONSES)
    with serving(make_app(scorer)) as url:
        out = httpx.post(url + "/score", json={"prompts": prompts, "responses": RESPONSES}).json()
    torch.testing.assert_close(torch.tensor(out["mean"]), direct.mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(out["std"]), direct.std, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(out["members"]), direct.members.T, atol=1e-5, rtol=0)
    u_bar = direct.std.double().mean().item()  # one batch: u_bar is the mean sigma of these six
    assert out["state"]["u_bar"] == pytest.approx(u_bar, abs=1e-6) and out["state"]["up_count"] == 6
    expected = direct.mean.double() - (direct.std.double() - u_bar)
    torch.testing.assert_close(torch.tensor(out["reward"], dtype=torch.float64), expected, atol=1e-5, rtol=0)


def test_openrlhf_get_reward_protocol(scorer):
    """query = rendered prompt + response, prompts = rendered prompts; the response shape OpenRLHF reads."""
    rendered = [chatml(messages(p)) for p in PROMPTS]
    queries = [r + resp + "<|im_end|>\n" for r, resp in zip(rendered, RESPONSES)]
    with serving(make_app(scorer, reward="std:k=1")) as url:
        out = httpx.post(url + "/get_reward", json={"query": queries, "prompts": rendered, "labels": [None] * 4}).json()
        without_prompts = httpx.post(url + "/get_reward", json={"query": queries}).json()
    assert set(out) == {"rewards", "scores", "extra_logs"} and set(out["extra_logs"]) == {"reward_mean", "reward_std"}
    direct = scorer.score([messages(p) for p in PROMPTS], RESPONSES[:4])
    torch.testing.assert_close(torch.tensor(out["extra_logs"]["reward_mean"]), direct.mean, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(out["rewards"]), direct.mean - direct.std, atol=1e-5, rtol=0)
    assert out["scores"] == pytest.approx([1 / (1 + math.exp(-r)) for r in out["rewards"]])
    assert without_prompts["rewards"] == pytest.approx(out["rewards"], abs=1e-6)  # split from the query alone


def test_classify_protocol_for_verl(scorer):
    """verl posts {"model", "input", "use_activation": false} and reads data[-1]["probs"][-1]."""
    texts = [chatml(messages(p)) + r + "<|im_end|>\n" for p, r in zip(PROMPTS, RESPONSES)]
    direct = scorer.score([messages(p) for p in PROMPTS], RESPONSES[:4]).mean
    with serving(make_app(scorer, reward="mean")) as url:
        one = httpx.post(url + "/classify", json={"model": "rm", "input": texts[2], "use_activation": False}).json()
        many = httpx.post(url + "/classify", json={"input": texts, "activation": True}).json()
    assert one["object"] == "list" and one["model"] == "rm" and len(one["data"]) == 1
    assert one["data"][-1]["probs"][-1] == pytest.approx(direct[2].item(), abs=1e-5)
    assert [d["index"] for d in many["data"]] == [0, 1, 2, 3]
    assert [d["probs"][0] for d in many["data"]] == pytest.approx(torch.sigmoid(direct).tolist(), abs=1e-5)


def test_concurrent_requests_share_one_forward(scorer):
    counting = CountingScorer(scorer)
    app = make_app(counting, reward="mean", max_batch=8, max_wait_ms=5000, splitter=PlainSplitter())
    with serving(app) as url:
        barrier, answers = threading.Barrier(8), [None] * 8

        def one(i):
            with httpx.Client(timeout=60) as client:  # built before the barrier: requests leave together
                barrier.wait()
                answers[i] = client.post(url + "/score", json={"prompts": [PROMPTS[i % 4]], "responses": [RESPONSES[i % 6]]}).json()

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        health = httpx.get(url + "/health").json()
    assert counting.calls == [8]  # eight requests, one batched forward, closed as soon as it was full
    assert health["batching"]["batches"] == 1 and health["batching"]["largest_batch"] == 8
    direct = scorer.score([PROMPTS[i % 4] for i in range(8)], [RESPONSES[i % 6] for i in range(8)]).mean
    assert [a["mean"][0] for a in answers] == pytest.approx(direct.tolist(), abs=1e-5)


def test_max_batch_splits_batches_and_keeps_requests_whole(scorer):
    counting = CountingScorer(scorer)
    app = make_app(counting, reward="mean", max_batch=4, max_wait_ms=3000, splitter=PlainSplitter())
    with serving(app) as url:
        barrier = threading.Barrier(4)

        def one():
            with httpx.Client(timeout=60) as client:
                barrier.wait()
                client.post(url + "/score", json={"prompts": PROMPTS[:3], "responses": RESPONSES[:3]})

        threads = [threading.Thread(target=one) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert counting.calls == [3, 3, 3, 3]  # 3 + 3 > max_batch: never merged, never split


def test_state_is_saved_and_restored_across_restarts(scorer, tmp_path):
    """UP's running mean and online log-sigmoid references survive a restart and continue exactly."""
    spec = "up:beta2=1|log_sigmoid:q=0.5"
    prompts = [messages(PROMPTS[i % 2]) for i in range(6)]
    config = dict(state_dir=tmp_path / "state", save_interval_s=0, reference_samples=2)
    with serving(make_app(scorer, reward=spec, **config)) as url:
        first = httpx.post(url + "/score", json={"prompts": prompts[:3], "responses": RESPONSES[:3]}).json()
        second = httpx.post(url + "/score", json={"prompts": prompts[3:], "responses": RESPONSES[3:]}).json()
    with serving(make_app(scorer, reward=spec, **config)) as url:
        restored = httpx.get(url + "/health").json()["state"]
        third = httpx.post(url + "/score", json={"prompts": prompts[:2], "responses": RESPONSES[4:]}).json()
    assert restored == second["state"] and restored["up_count"] == 6 and restored["reference_prompts"] == 2
    # the same six + two responses through one in-memory reward, batch by batch
    reference = ServeState(parse_reward(spec), reference_samples=2)
    keys = [str(p) for p in prompts]
    for sl, resp in ((slice(0, 3), RESPONSES[:3]), (slice(3, 6), RESPONSES[3:])):
        reference.apply(scorer.score(prompts[sl], resp), keys[sl])
    expected = reference.apply(scorer.score(prompts[:2], RESPONSES[4:]), keys[:2])
    assert third["reward"] == pytest.approx(expected.tolist(), abs=1e-5)
    assert first["state"]["up_count"] == 3 and third["state"]["up_count"] == 8


def test_reference_endpoint_sets_log_sigmoid_levels(scorer):
    prompts = [PROMPTS[0]] * 3 + [PROMPTS[1]] * 3
    with serving(make_app(scorer, reward="zscore|std:k=1|log_sigmoid:q=0.5", splitter=PlainSplitter())) as url:
        refused = httpx.post(url + "/score", json={"prompts": prompts[:1], "responses": RESPONSES[:1]})
        fitted = httpx.post(url + "/reference", json={"prompts": prompts, "responses": RESPONSES}).json()
        out = httpx.post(url + "/score", json={"prompts": [PROMPTS[0], PROMPTS[1]], "responses": ["it is good", "sorry"]}).json()
    assert refused.status_code == 409 and "reference" in refused.json()["error"]
    assert fitted["fitted"] == {"samples": 6, "prompts": 2}
    ref = scorer.score(prompts, RESPONSES)
    loc, scale = ref.mean.double().mean(), ref.mean.double().std(unbiased=False)
    base = (ref.mean.double() - loc) / scale - ref.std.double() / scale  # zscore then mu - sigma
    levels = [base[:3].median().item(), base[3:].median().item()]
    new = scorer.score([PROMPTS[0], PROMPTS[1]], ["it is good", "sorry"])
    new_base = (new.mean.double() - loc) / scale - new.std.double() / scale
    expected = torch.nn.functional.logsigmoid(new_base - torch.tensor(levels, dtype=torch.float64))
    assert out["reward"] == pytest.approx(expected.tolist(), abs=1e-5)


def test_odd_but_valid_texts_are_scored(scorer):
    """Empty, control, emoji, zero-width and over-long texts pass validation and the real tokenizer alike."""
    prompts = ["", "\x00", [{"role": "system", "content": ""}, {"role": "user", "content": "🙂" * 10}]]
    responses = ["", "\u200b\u0301", "good " * 400]
    with serving(make_app(scorer, reward="std:k=1", max_text_chars=5000)) as url:
        answer = httpx.post(url + "/score", json={"prompts": prompts, "responses": responses})
        assert answer.status_code == 200, answer.text
        assert httpx.get(url + "/health").json()["batching"]["items"] == 3
    direct = scorer.score(prompts, responses)
    assert answer.json()["mean"] == pytest.approx(direct.mean.tolist(), abs=1e-5)
