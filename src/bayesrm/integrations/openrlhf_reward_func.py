"""OpenRLHF reward function file: ``--remote_rm_url /path/to/openrlhf_reward_func.py``.

OpenRLHF imports this file and calls ``reward_func(queries, prompts, labels)``: ``queries`` are the
rendered prompts followed by the responses, ``prompts`` the rendered prompts. The function forwards
them to a ``bayesrm serve`` server ($BAYESRM_REWARD_URL, comma-separated for several; token in
$BAYESRM_SERVE_TOKEN) and returns ``{"rewards", "scores", "extra_logs"}`` as tensors.
Alternatively give OpenRLHF the server itself: ``--remote_rm_url http://127.0.0.1:8000/get_reward``.
"""

from __future__ import annotations

from typing import Any

import torch

_CLIENT: Any = None


def reward_func(queries: list[str], prompts: list[str], labels: list[Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    global _CLIENT
    if _CLIENT is None:
        from bayesrm.integrations.client import RewardClient

        _CLIENT = RewardClient()
    out = _CLIENT.get_reward(queries, prompts, labels)
    return {
        "rewards": torch.tensor(out["rewards"], dtype=torch.float32),
        "scores": torch.tensor(out["scores"], dtype=torch.float32),
        "extra_logs": {k: torch.tensor(v, dtype=torch.float32) for k, v in out["extra_logs"].items()},
    }
