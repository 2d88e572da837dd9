"""Conservative rewards as reward functions for other RL frameworks.

- :func:`trl_reward_func`: TRL's ``reward_funcs`` signature (GRPOTrainer, RLOOTrainer, trl 1.x):
  ``f(prompts, completions, **kwargs) -> list[float]``, where prompts / completions are strings
  (standard format) or lists of chat messages (conversational format).
- :func:`reward_callable`: a plain ``f(prompts, responses) -> list[float]`` (OpenRLHF, verl, ...).
- :func:`as_trl_reward_func`: the one TRL wrapper (completion text, ``log_metric`` / ``log_extra``, the
  ``__name__`` TRL logs under) around any scoring function; ``bayesrm.integrations.trl.reward_func``
  (scores from a reward server or in-process ``LocalRewards``) uses it too.

Both score with the scorer, then apply the conservative reward once per call, so a stateful reward
(``up``: running mean of sigma) keeps its statistics across calls as in the native loop.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from bayesrm.alignment.rl.monitor import TRL_PREFIX, disagreement
from bayesrm.alignment.rl.reference import ReferenceLevels
from bayesrm.alignment.rl.reward_fn import Reward, apply_reward, as_proxies
from bayesrm.types import Message, Prompt, RewardScorer


def completion_text(completion: str | list[Message]) -> str:
    """The response text of a TRL completion: the string, or the assistant messages' contents joined."""
    if isinstance(completion, str):
        return completion
    parts = [m.get("content", "") for m in completion if m.get("role", "assistant") == "assistant"]
    return "".join(p if isinstance(p, str) else str(p) for p in parts)


def _resolve(reward: Reward | str) -> Reward:
    from bayesrm.rewards import parse_reward

    return parse_reward(reward) if isinstance(reward, str) else reward


Batch = tuple[Sequence[float], dict[str, float | None], dict[str, list[float]]]
"""What a scoring function gives :func:`as_trl_reward_func`: (rewards, metrics to log, completion-table columns)."""


def as_trl_reward_func(score: Callable[[list[Prompt], list[str]], Batch], name: str) -> Callable[..., list[float]]:
    """TRL's ``reward_funcs`` signature around ``score(prompts, responses)``.

    TRL calls ``f(prompts=..., completions=..., completion_ids=..., **kwargs)``; prompts are strings or lists
    of chat messages (passed on as messages, so a scorer renders them with its own chat template), a
    completion is a string or messages (its assistant text is scored). When TRL passes ``log_metric(name,
    value)`` (averaged per logging step) each metric that is not None is logged; ``log_extra(column,
    values)`` gets the table columns. Other keyword arguments (completion_ids, trainer_state, dataset
    columns, ...) are ignored. TRL logs the reward under the function's ``__name__``: ``name``.
    """

    def reward_func(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        rewards, metrics, columns = score([p if isinstance(p, str) else list(p) for p in prompts],
                                          [completion_text(c) for c in completions])
        log_metric, log_extra = kwargs.get("log_metric"), kwargs.get("log_extra")
        if callable(log_metric):
            for key, value in metrics.items():
                if value is not None:
                    log_metric(key, float(value))
        if callable(log_extra):
            for key, values in columns.items():
                log_extra(key, list(values))
        return [float(r) for r in rewards]

    reward_func.__name__ = name
    return reward_func


def reward_callable(
    scorer: RewardScorer | Sequence[RewardScorer],
    reward: Reward | str = "mean",
    batch_size: int = 32,
    reference: ReferenceLevels | None = None,
    gold: RewardScorer | None = None,
) -> Callable[..., list[float]]:
    """f(prompts, responses) -> conservative rewards as floats. ``reward``: a Reward or a spec string.

    scorer: one proxy, or one per term of an AND sum ('A + B'). reference: per-prompt levels of a
    log_sigmoid reward, drawn from reference-policy samples the first time a prompt is seen
    (:class:`~bayesrm.alignment.rl.reference.ReferenceLevels`; give it a ``state_path`` to keep them
    across a resumed run). gold: a judge scored alongside, for the monitor only (never in the reward).
    ``f.last`` holds the last batch's means (proxy, uncertainty, disagreement, gold) for monitoring.
    """
    reward = _resolve(reward)
    proxies = as_proxies(scorer)

    def score(prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts and {len(responses)} responses")
        if reference is not None:
            reference.ensure(reward, prompts)
        predictions = [p.score(list(prompts), list(responses), batch_size=batch_size) for p in proxies]
        values = apply_reward(reward, predictions, prompts)
        score.last = {
            "proxy": predictions[0].mean.mean().item(),
            "uncertainty": predictions[0].std.mean().item(),
            "disagreement": disagreement(predictions[0]),
            "gold": gold.score(list(prompts), list(responses), batch_size=batch_size).mean.mean().item() if gold else None,
        }
        return values.tolist()

    score.last = {}
    score.__name__ = f"bayesrm_{getattr(reward, 'name', 'reward')}"
    return score


def trl_reward_func(
    scorer: RewardScorer | Sequence[RewardScorer],
    reward: Reward | str = "mean",
    batch_size: int = 32,
    reference: ReferenceLevels | None = None,
    gold: RewardScorer | None = None,
) -> Callable[..., list[float]]:
    """A TRL reward function: ``GRPOTrainer(..., reward_funcs=[trl_reward_func(scorer, "up:beta2=1")])``.

    Conversational prompts (lists of messages) are passed to the scorer as messages, so it renders
    them with its own chat template; the completion is the assistant text. When TRL passes
    ``log_metric`` (trl >= 1.x), the batch's proxy mean, sigma, member disagreement (and gold, if
    given) are logged under :data:`~bayesrm.alignment.rl.monitor.TRL_PREFIX` names (``bayesrm/proxy``, ...):
    what :class:`~bayesrm.alignment.rl.monitor.HackingMonitorCallback` reads.
    Other TRL keyword arguments (completion_ids, trainer_state, dataset columns, ...) are ignored.
    """
    plain = reward_callable(scorer, reward, batch_size, reference, gold)

    def score(prompts: list[Prompt], responses: list[str]) -> Batch:
        values = plain(prompts, responses)
        return values, {TRL_PREFIX + key: value for key, value in plain.last.items()}, {}

    return as_trl_reward_func(score, plain.__name__)
