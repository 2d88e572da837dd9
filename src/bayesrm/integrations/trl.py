"""A TRL reward function (GRPOTrainer / RLOOTrainer ``reward_funcs``) that logs reward uncertainty.

TRL calls ``f(prompts=..., completions=..., completion_ids=..., **kwargs)`` and takes a list of
floats (None for "no reward"); its kwargs carry ``log_metric(name, value)`` (a scalar averaged per
logging step) and ``log_extra(column, values)`` (a column of the completions table). This function
logs the batch means of the reward model's mean and std, the members' disagreement (ensembles) and,
for ``up``, the running mean uncertainty, under the names of
:data:`bayesrm.alignment.rl.monitor.TRL_PREFIX` (``bayesrm/proxy``, ``bayesrm/uncertainty``,
``bayesrm/disagreement``, ``bayesrm/u_bar``: those the reward-hacking monitor reads); per-completion
mean and std go to the table as ``bayesrm/proxy`` and ``bayesrm/uncertainty``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from bayesrm.alignment.rl.monitor import TRL_PREFIX, disagreement
from bayesrm.alignment.rl.trl_adapter import Batch, as_trl_reward_func
from bayesrm.integrations.client import LocalRewards, RewardClient, reward_source
from bayesrm.types import Prompt, RewardPrediction


def reward_func(source: Any = None, reward: str = "mean", name: str | None = None) -> Callable[..., list[float]]:
    """``reward_funcs=[reward_func(scorer_or_url, "up:beta2=1")]``.

    source: a scorer (in-process), a server URL / list of URLs, None ($BAYESRM_REWARD_URL), or a
    RewardClient / LocalRewards. reward: the spec used in-process (a server has its own). name: what TRL
    logs the reward under (``rewards/<name>/mean``; default ``bayesrm_<last stage>``, e.g. ``bayesrm_up``).
    The TRL side (completion text, log_metric / log_extra) is :func:`bayesrm.alignment.rl.trl_adapter.as_trl_reward_func`.
    """
    scores: RewardClient | LocalRewards = reward_source(source, reward)
    label = name or f"bayesrm_{reward.split('|')[-1].split(':')[0]}"

    def score(prompts: list[Prompt], responses: list[str]) -> Batch:
        out = scores.score(prompts, responses)
        mean, std = out["mean"], out["std"]
        metrics: dict[str, float | None] = {}
        if mean:
            members = out.get("members")  # [B][K] or None
            pred = RewardPrediction.from_members(torch.tensor(members, dtype=torch.float64).T) if members else None  # [K, B]
            metrics = {TRL_PREFIX + "proxy": sum(mean) / len(mean), TRL_PREFIX + "uncertainty": sum(std) / len(std),
                       TRL_PREFIX + "disagreement": disagreement(pred) if pred is not None else None}
            if "u_bar" in out.get("state", {}):
                metrics[TRL_PREFIX + "u_bar"] = float(out["state"]["u_bar"])
        return out["reward"], metrics, {TRL_PREFIX + "proxy": list(mean), TRL_PREFIX + "uncertainty": list(std)}

    return as_trl_reward_func(score, label)  # TRL logs each reward function under its __name__
