"""A TRL reward function (GRPOTrainer / RLOOTrainer ``reward_funcs``) that logs reward uncertainty.

TRL calls ``f(prompts=..., completions=..., completion_ids=..., **kwargs)`` and takes a list of
floats (None for "no reward"); its kwargs carry ``log_metric(name, value)`` (a scalar averaged per
logging step) and ``log_extra(column, values)`` (a column of the completions table). This function
logs the batch means of the reward model's mean and std (``<name>/mean``, ``<name>/std``) and, for
``up``, the running mean uncertainty ``<name>/u_bar``; per-completion mean and std go to the table.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from bayesrm.integrations.client import LocalRewards, RewardClient, reward_source


def _text(completion: Any) -> str:
    """A TRL completion's text: the string, or its assistant messages' contents joined."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content", "")) for m in completion if m.get("role", "assistant") == "assistant")


def reward_func(source: Any = None, reward: str = "mean", name: str | None = None) -> Callable[..., list[float]]:
    """``reward_funcs=[reward_func(scorer_or_url, "up:beta2=1")]``.

    source: a scorer (in-process), a server URL / list of URLs, None ($BAYESRM_REWARD_URL), or a
    RewardClient / LocalRewards. reward: the spec used in-process (a server has its own).
    """
    scores: RewardClient | LocalRewards = reward_source(source, reward)
    label = name or f"bayesrm_{reward.split('|')[-1].split(':')[0]}"

    def bayesrm_reward(prompts: Sequence[Any], completions: Sequence[Any], completion_ids: Any = None, **kwargs: Any) -> list[float]:
        out = scores.score([p if isinstance(p, str) else list(p) for p in prompts], [_text(c) for c in completions])
        mean, std = out["mean"], out["std"]
        log_metric, log_extra = kwargs.get("log_metric"), kwargs.get("log_extra")
        if log_metric is not None and mean:
            log_metric(f"{label}/mean", sum(mean) / len(mean))
            log_metric(f"{label}/std", sum(std) / len(std))
            if "u_bar" in out.get("state", {}):
                log_metric(f"{label}/u_bar", float(out["state"]["u_bar"]))
        if log_extra is not None:
            log_extra(f"{label}_mean", list(mean))
            log_extra(f"{label}_std", list(std))
        return [float(r) for r in out["reward"]]

    bayesrm_reward.__name__ = label  # TRL logs each reward function under its __name__
    return bayesrm_reward
