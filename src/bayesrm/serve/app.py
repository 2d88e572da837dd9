"""The reward server's ASGI app: OpenRLHF /get_reward, vLLM-style /classify (verl), /score, /reference, /health.

Protocols (field names as the frameworks send them):

- ``POST /get_reward`` (OpenRLHF remote reward model): ``{"query": [prompt + response texts],
  "prompts": [rendered prompts], "labels": [...]}`` -> ``{"rewards": [r], "scores": [s in (0, 1)],
  "extra_logs": {"reward_mean": [mu], "reward_std": [sigma]}}``. ``scores`` is sigmoid(r), or
  exp(r) = sigmoid(r_base - r_ref) for a log_sigmoid reward (OpenRLHF's dynamic filtering reads it).
- ``POST /classify`` (vLLM pooling API, which verl's reward loop calls): ``{"model": ..., "input":
  text | [texts], "use_activation": false}`` -> ``{"object": "list", "data": [{"index": i,
  "probs": [r], "num_classes": 1, "mean": mu, "std": sigma}], ...}``; verl reads
  ``data[-1]["probs"][-1]``. With ``use_activation`` (or ``activation``) true, probs are sigmoid(r).
- ``POST /score``: ``{"prompts": [text | messages], "responses": [texts]}`` -> ``{"mean", "std",
  "members" ([B][K] or null), "reward", "state"}``.
- ``POST /reference``: same body as /score, responses of the reference policy: fits a z-score and
  sets the prompts' log-sigmoid reference samples.
- ``GET /health``: status, model, reward, batching counters and the reward state (no token needed).
"""

from __future__ import annotations

import hmac
import logging
import math
import os
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from bayesrm.generation.sampler import prompt_key
from bayesrm.serve.batcher import DynamicBatcher
from bayesrm.serve.config import ServeConfig
from bayesrm.serve.schemas import InputError, Limits, flag, parse_body, same_length
from bayesrm.serve.state import ServeState
from bayesrm.serve.template import ChatTemplate, PlainSplitter, TemplateError
from bayesrm.types import Prompt, RewardScorer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Item:
    prompt: Prompt
    response: str
    key: str


class RewardService:
    """Scores batches of items with the scorer and the served reward (runs on the scoring thread)."""

    def __init__(self, scorer: RewardScorer, state: ServeState, config: ServeConfig) -> None:
        self.scorer, self.state, self.config = scorer, state, config
        self._last_save = time.monotonic()

    def score_items(self, items: list[Item]) -> list[dict[str, Any]]:
        pred = self.scorer.score([i.prompt for i in items], [i.response for i in items], batch_size=self.config.batch_size)
        rewards = self.state.apply(pred, [i.key for i in items]).tolist()  # [B]
        self.maybe_save()
        state = self.state.stats()
        means, stds = pred.mean.tolist(), pred.std.tolist()
        members = None if pred.members is None else pred.members.T.tolist()  # [K, B] -> [B][K]
        return [
            {"mean": means[j], "std": stds[j], "members": None if members is None else members[j], "reward": rewards[j], "state": state}
            for j in range(len(items))
        ]

    def fit_reference(self, items: list[Item]) -> dict[str, int]:
        pred = self.scorer.score([i.prompt for i in items], [i.response for i in items], batch_size=self.config.batch_size)
        out = self.state.fit_reference(pred, [i.key for i in items])
        self.maybe_save(force=True)
        return out

    def maybe_save(self, force: bool = False) -> None:
        directory = self.config.state_dir
        if directory is None:
            return
        now = time.monotonic()
        if force or self.config.save_interval_s == 0 or now - self._last_save >= self.config.save_interval_s:
            try:
                self.state.save(directory)
                self._last_save = now
            except OSError as err:  # keep serving; the next batch tries again
                logger.error("could not save the reward state to %s: %s", directory, err)


def _score_of(reward: float, log_sigmoid: bool) -> float:
    """A (0, 1) score for OpenRLHF's dynamic filtering: P(better than the reference) or sigmoid(r)."""
    if log_sigmoid:
        return math.exp(reward)
    return 1.0 / (1.0 + math.exp(-reward)) if reward >= 0 else math.exp(reward) / (1.0 + math.exp(reward))


def create_app(
    scorer: RewardScorer,
    state: ServeState,
    splitter: ChatTemplate | PlainSplitter,
    config: ServeConfig,
    model_name: str = "bayesrm",
) -> FastAPI:
    """The FastAPI app serving ``state.reward`` of ``scorer``'s predictions."""
    service = RewardService(scorer, state, config)
    limits = Limits(config)
    token = os.environ.get(config.token_env) or None
    holder: dict[str, DynamicBatcher] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher = DynamicBatcher(service.score_items, config.max_batch, config.max_wait_ms / 1000)
        batcher.start()
        holder["batcher"] = batcher
        app.state.batcher = batcher
        try:
            yield
        finally:
            await batcher.stop()
            service.maybe_save(force=True)

    app = FastAPI(title="bayesrm reward server", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service

    @app.exception_handler(InputError)
    async def _input_error(request: Request, err: InputError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
        return JSONResponse(err.payload(), status_code=err.status, headers=headers)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, err: Exception) -> JSONResponse:
        logger.exception("error while serving %s", request.url.path)
        return JSONResponse({"error": f"internal error: {type(err).__name__}: {err}", "field": None}, status_code=500)

    async def read(request: Request) -> dict[str, Any]:
        if token is not None:
            given = request.headers.get("authorization", "")
            if not (given.startswith("Bearer ") and hmac.compare_digest(given[7:].encode(), token.encode())):
                raise InputError(401, "Authorization", "missing or wrong bearer token (header 'Authorization: Bearer <token>')")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > config.max_body_bytes:
            raise InputError(413, "body", f"request body has {declared} bytes; at most {config.max_body_bytes} are accepted")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > config.max_body_bytes:
                raise InputError(413, "body", f"request body is over {config.max_body_bytes} bytes")
            chunks.append(chunk)
        return parse_body(b"".join(chunks))

    async def score(items: list[Item]) -> list[dict[str, Any]]:
        why = state.ready()
        if why is not None:
            raise InputError(409, None, why)
        if not items:
            return []
        return await holder["batcher"].submit(items)

    def split(query: str, prompt: str | None, field: str) -> Item:
        try:
            messages, response = splitter.split(query, prompt)
        except TemplateError as err:
            raise InputError(422, field, f"'{field}': {err}") from None
        return Item(messages, response, prompt_key(messages))

    @app.get("/health")
    async def health() -> dict[str, Any]:
        batcher = holder.get("batcher")
        return {
            "status": "ok",
            "model": model_name,
            "reward": state.spec,
            "ready": state.ready() is None,
            "batching": batcher.stats() if batcher else {},
            "state": state.stats(),
        }

    @app.post("/get_reward")
    async def get_reward(request: Request) -> dict[str, Any]:
        data = await read(request)
        queries = limits.texts(data, "query")
        prompts = limits.texts(data, "prompts", required=False)
        labels = limits.array(data, "labels", required=False)
        if prompts is not None:
            same_length("prompts", prompts, "query", queries)
        if labels is not None:
            same_length("labels", labels, "query", queries)
        items = [split(q, None if prompts is None else prompts[i], f"query[{i}]") for i, q in enumerate(queries)]
        results = await score(items)
        log_sigmoid = state.top is not None
        rewards = [r["reward"] for r in results]
        return {
            "rewards": rewards,
            "scores": [_score_of(r, log_sigmoid) for r in rewards],
            "extra_logs": {"reward_mean": [r["mean"] for r in results], "reward_std": [r["std"] for r in results]},
        }

    @app.post("/classify")
    async def classify(request: Request) -> dict[str, Any]:
        data = await read(request)
        raw = data.get("input")
        if isinstance(raw, str):
            texts = [limits.text(raw, "input")]
            fields = ["input"]
        else:
            texts = limits.texts(data, "input") or []
            fields = [f"input[{i}]" for i in range(len(texts))]
        model = data.get("model", model_name)
        if model is not None and not isinstance(model, str):
            raise InputError(422, "model", "'model' must be a string")
        activate = flag(data, "use_activation") or flag(data, "activation")
        results = await score([split(t, None, f) for t, f in zip(texts, fields)])
        out = []
        for i, r in enumerate(results):
            value = _score_of(r["reward"], False) if activate else r["reward"]
            out.append({"index": i, "label": "reward", "probs": [value], "num_classes": 1, "mean": r["mean"], "std": r["std"]})
        return {
            "id": f"classify-{uuid.uuid4().hex}",
            "object": "list",
            "created": int(time.time()),
            "model": model or model_name,
            "data": out,
            "usage": {"prompt_tokens": 0, "total_tokens": 0},
        }

    def pairs(data: dict[str, Any]) -> list[Item]:
        prompts = limits.prompts(data, "prompts")
        responses = limits.texts(data, "responses") or []
        same_length("responses", responses, "prompts", prompts)
        return [Item(p, r, prompt_key(p)) for p, r in zip(prompts, responses)]

    @app.post("/score")
    async def score_endpoint(request: Request) -> dict[str, Any]:
        results = await score(pairs(await read(request)))
        return {
            "mean": [r["mean"] for r in results],
            "std": [r["std"] for r in results],
            "members": None if not results or results[0]["members"] is None else [r["members"] for r in results],
            "reward": [r["reward"] for r in results],
            "state": results[-1]["state"] if results else state.stats(),
        }

    @app.post("/reference")
    async def reference(request: Request) -> dict[str, Any]:
        items = pairs(await read(request))
        if not items:
            raise InputError(422, "prompts", "'prompts' is empty; send reference-policy responses")
        try:
            fitted = await holder["batcher"].run_exclusive(service.fit_reference, items)
        except ValueError as err:
            raise InputError(422, "responses", f"cannot fit the reward's references: {err}") from None
        return {"fitted": fitted, "state": state.stats()}

    return app
