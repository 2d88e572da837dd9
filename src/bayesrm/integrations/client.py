"""Two interchangeable sources of conservative rewards for the framework adapters.

- :class:`RewardClient`: the HTTP client of ``bayesrm serve`` (several URLs are tried in turn;
  connection errors and 5xx answers are retried with backoff, 4xx answers raise at once).
- :class:`LocalRewards`: the same answers computed in-process from a scorer and a reward spec.

Both have ``score(prompts, responses) -> {"mean": [...], "std": [...], "members": ... | None,
"reward": [...], "state": {...}}``, the body of the server's POST /score.
"""

from __future__ import annotations

import os
import time
from typing import Any, Sequence

from bayesrm.types import Prompt, RewardScorer

URL_ENV = "BAYESRM_REWARD_URL"
"""Environment variable with the server URL(s), comma-separated, e.g. ``http://127.0.0.1:8000``."""
TOKEN_ENV = "BAYESRM_SERVE_TOKEN"


class RewardClient:
    """HTTP client of a bayesrm reward server."""

    def __init__(
        self,
        urls: str | Sequence[str] | None = None,
        token: str | None = None,
        timeout: float = 180.0,
        retries: int = 5,
        backoff_s: float = 0.5,
    ) -> None:
        import httpx

        urls = urls if urls is not None else os.environ.get(URL_ENV, "")
        self.urls = [u.strip().rstrip("/") for u in (urls.split(",") if isinstance(urls, str) else urls) if u.strip()]
        if not self.urls:
            raise ValueError(f"no reward server URL: pass urls= or set {URL_ENV}")
        token = token if token is not None else os.environ.get(TOKEN_ENV)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.retries, self.backoff_s = retries, backoff_s
        self._http = httpx.Client(timeout=timeout, headers=headers)
        self._next = 0

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        last: Exception | None = None
        for attempt in range(self.retries + 1):
            url = self.urls[(self._next + attempt) % len(self.urls)] + path
            try:
                answer = self._http.post(url, json=body)
            except httpx.TransportError as err:
                last = err
            else:
                if answer.status_code < 400:
                    self._next = (self._next + 1) % len(self.urls)
                    return answer.json()
                if answer.status_code < 500:
                    try:
                        detail = answer.json().get("error", answer.text)
                    except ValueError:
                        detail = answer.text
                    raise ValueError(f"reward server refused the request ({answer.status_code}): {detail}")
                last = RuntimeError(f"{url}: HTTP {answer.status_code}: {answer.text[:200]}")
            time.sleep(self.backoff_s * (2**attempt if attempt < 5 else 32))
        raise ConnectionError(f"reward server unreachable after {self.retries + 1} tries ({', '.join(self.urls)}): {last}")

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> dict[str, Any]:
        return self.post("/score", {"prompts": list(prompts), "responses": list(responses)})

    def get_reward(self, queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any] | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {"query": list(queries), "prompts": list(prompts)}
        if labels is not None:
            body["labels"] = list(labels)
        return self.post("/get_reward", body)

    def health(self) -> dict[str, Any]:
        return self._http.get(self.urls[0] + "/health").json()

    def close(self) -> None:
        self._http.close()


class LocalRewards:
    """In-process equivalent of the server's /score: a scorer, a reward spec and its running state."""

    def __init__(self, scorer: RewardScorer, reward: str = "mean", reference_samples: int = 4, batch_size: int = 32) -> None:
        from bayesrm.rewards import parse_reward
        from bayesrm.serve.state import ServeState

        self.scorer, self.batch_size = scorer, batch_size
        self.state = ServeState(parse_reward(reward), reference_samples=reference_samples)

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> dict[str, Any]:
        from bayesrm.generation.sampler import prompt_key

        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts and {len(responses)} responses")
        why = self.state.ready()
        if why is not None:
            raise ValueError(why)
        pred = self.scorer.score(list(prompts), list(responses), batch_size=self.batch_size)
        reward = self.state.apply(pred, [prompt_key(p) for p in prompts])
        return {
            "mean": pred.mean.tolist(),
            "std": pred.std.tolist(),
            "members": None if pred.members is None else pred.members.T.tolist(),
            "reward": reward.tolist(),
            "state": self.state.stats(),
        }


def reward_source(source: Any = None, reward: str = "mean") -> RewardClient | LocalRewards:
    """A RewardClient for a URL (or None: $BAYESRM_REWARD_URL), a LocalRewards for a scorer; others pass through."""
    if source is None or isinstance(source, (str, list, tuple)):
        return RewardClient(source)
    if isinstance(source, (RewardClient, LocalRewards)):
        return source
    return LocalRewards(source, reward)
