"""Bad input to the reward server: each case a 4xx JSON error naming the field; the server keeps serving."""

from __future__ import annotations

import json

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bayesrm.rewards import parse_reward
from bayesrm.serve.app import create_app
from bayesrm.serve.config import ServeConfig
from bayesrm.serve.state import ServeState
from bayesrm.serve.template import ChatTemplate
from bayesrm.types import RewardPrediction
from serve_util import CHATML, chatml, serving

GOOD_QUERY = chatml([{"role": "user", "content": "hi"}]) + "good answer<|im_end|>\n"


class LengthScorer:
    """A 2-member ensemble: reward = number of words, and twice that (fast, deterministic)."""

    def score(self, prompts, responses, batch_size=32, progress=False):
        import torch

        n = torch.tensor([float(len(r.split())) for r in responses])
        return RewardPrediction.from_members(torch.stack([n, 2 * n]))


@pytest.fixture(scope="module")
def url():
    config = ServeConfig(max_items=4, max_text_chars=120, max_body_bytes=5000, max_wait_ms=0)
    app = create_app(LengthScorer(), ServeState(parse_reward("std:k=1")), ChatTemplate.from_jinja(CHATML), config)
    with serving(app) as base:
        yield base


HTTP = httpx.Client(timeout=30)  # one client: creating one per request costs an SSL context each time


def post(url, path, body=None, raw=None, headers=None):
    content = raw if raw is not None else json.dumps(body).encode()
    return HTTP.post(url + path, content=content, headers={"content-type": "application/json", **(headers or {})})


CASES = [
    # (path, body or raw bytes, status, field)
    ("/score", b"{not json", 400, "body"),
    ("/score", b"\xff\xfe", 400, "body"),
    ("/score", b'{"prompts": [NaN]}', 400, "body"),
    ("/score", b"[1, 2]", 422, "body"),
    ("/score", b"[" * 2400 + b"]" * 2400, 400, "body"),
    ("/score", {"responses": ["a"]}, 422, "prompts"),
    ("/score", {"prompts": ["a"]}, 422, "responses"),
    ("/score", {"prompts": "a", "responses": ["a"]}, 422, "prompts"),
    ("/score", {"prompts": [1], "responses": ["a"]}, 422, "prompts[0]"),
    ("/score", {"prompts": ["a"], "responses": [None]}, 422, "responses[0]"),
    ("/score", {"prompts": ["a", "b"], "responses": ["a"]}, 422, "responses"),
    ("/score", {"prompts": [[{"role": "user"}]], "responses": ["a"]}, 422, "prompts[0][0].content"),
    ("/score", {"prompts": [[{"role": "robot", "content": "x"}]], "responses": ["a"]}, 422, "prompts[0][0].role"),
    ("/score", {"prompts": [[]], "responses": ["a"]}, 422, "prompts[0]"),
    ("/score", {"prompts": ["a"], "responses": ["x" * 121]}, 413, "responses[0]"),
    ("/score", {"prompts": ["a"] * 5, "responses": ["a"] * 5}, 413, "prompts"),
    ("/score", {"prompts": ["a"], "responses": ["y" * 4990]}, 413, "body"),
    ("/score", b'{"prompts": ["\\ud800"], "responses": ["a"]}', 422, "prompts[0]"),
    ("/get_reward", {"prompts": ["a"]}, 422, "query"),
    ("/get_reward", {"query": [3]}, 422, "query[0]"),
    ("/get_reward", {"query": [GOOD_QUERY], "prompts": []}, 422, "prompts"),
    ("/get_reward", {"query": [GOOD_QUERY], "labels": "x"}, 422, "labels"),
    ("/get_reward", {"query": ["no template here"]}, 422, "query[0]"),
    ("/get_reward", {"query": [GOOD_QUERY] * 5}, 413, "query"),
    ("/classify", {"model": "m"}, 422, "input"),
    ("/classify", {"input": [GOOD_QUERY, 7]}, 422, "input[1]"),
    ("/classify", {"input": GOOD_QUERY, "use_activation": "yes"}, 422, "use_activation"),
    ("/classify", {"input": GOOD_QUERY, "model": 5}, 422, "model"),
    ("/classify", {"input": chatml([{"role": "user", "content": "only a prompt"}], generation_prompt=False)}, 422, "input"),
    ("/reference", {"prompts": [], "responses": []}, 422, "prompts"),
]


@pytest.mark.parametrize("path, body, status, field", CASES, ids=[f"{c[0]}-{c[3]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_gets_a_4xx_naming_the_field(url, path, body, status, field):
    answer = post(url, path, raw=body) if isinstance(body, bytes) else post(url, path, body)
    assert answer.status_code == status, answer.text
    payload = answer.json()
    assert payload["field"] == field and field.split("[")[0] in payload["error"]


def test_oversized_declared_body_is_refused_before_reading(url):
    answer = HTTP.post(url + "/score", content=b"x" * 6000, headers={"content-type": "application/json"})
    assert answer.status_code == 413 and answer.json()["field"] == "body"


def test_server_keeps_serving_after_bad_input(url):
    for path, body, *_ in CASES:
        post(url, path, raw=body) if isinstance(body, bytes) else post(url, path, body)
    good = post(url, "/get_reward", {"query": [GOOD_QUERY], "prompts": [chatml([{"role": "user", "content": "hi"}])]})
    assert good.status_code == 200 and good.json()["extra_logs"]["reward_mean"] == [3.0]  # members 2, 4 -> mean 3
    assert good.json()["rewards"] == [2.0]  # mu - sigma = 3 - 1
    assert HTTP.get(url + "/health").json()["status"] == "ok"
    assert HTTP.get(url + "/nope").status_code == 404


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=60),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)
field_names = st.sampled_from(["query", "prompts", "labels", "responses", "input", "model", "use_activation", "x"])
bodies = st.dictionaries(field_names, json_values, max_size=4) | json_values


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/score", "/get_reward", "/classify", "/reference"]), body=bodies)
def test_fuzzed_bodies_never_get_a_server_error(url, path, body):
    answer = post(url, path, body)
    assert answer.status_code in (200, 400, 409, 413, 422), answer.text
    payload = answer.json()
    if answer.status_code != 200:
        assert isinstance(payload["error"], str) and payload["error"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(max_size=300))
def test_fuzzed_bytes_never_get_a_server_error(url, raw):
    answer = post(url, "/get_reward", raw=raw)
    assert answer.status_code < 500, answer.text


def test_bearer_token(monkeypatch):
    monkeypatch.setenv("BAYESRM_TEST_TOKEN", "s3cret")
    config = ServeConfig(token_env="BAYESRM_TEST_TOKEN", max_wait_ms=0)
    app = create_app(LengthScorer(), ServeState(parse_reward("mean")), ChatTemplate.from_jinja(CHATML), config)
    body = {"prompts": ["a"], "responses": ["one two"]}
    with serving(app) as base:
        missing = httpx.post(base + "/score", json=body)
        wrong = httpx.post(base + "/score", json=body, headers={"Authorization": "Bearer nope"})
        right = httpx.post(base + "/score", json=body, headers={"Authorization": "Bearer s3cret"})
        health = httpx.get(base + "/health")
    assert missing.status_code == wrong.status_code == 401 and missing.json()["field"] == "Authorization"
    assert missing.headers["www-authenticate"] == "Bearer"
    assert right.status_code == 200 and right.json()["reward"] == [3.0]
    assert health.status_code == 200
