"""Conservative rewards as reward functions for other RL frameworks.

- :func:`trl_reward_func`: TRL's ``reward_funcs`` signature (GRPOTrainer, RLOOTrainer, trl 1.x):
  ``f(prompts, completions, **kwargs) -> list[float]``, where prompts / completions are strings
  (standard format) or lists of chat messages (conversational format).
- :func:`reward_callable`: a plain ``f(prompts, responses) -> list[float]`` (OpenRLHF, verl, ...).

Both score with the scorer, then apply the conservative reward once per call, so a stateful reward
(``up``: running mean of sigma) keeps its statistics across calls as in the native loop.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from bayesrm.alignment.rl.reward_fn import Reward, apply_reward, make_reward
from bayesrm.types import Message, Prompt, RewardScorer


def completion_text(completion: str | list[Message]) -> str:
    """The response text of a TRL completion: the string, or the assistant messages' contents joined."""
    if isinstance(completion, str):
        return completion
    parts = [m.get("content", "") for m in completion if m.get("role", "assistant") == "assistant"]
    return "".join(p if isinstance(p, str) else str(p) for p in parts)


def _resolve(reward: Reward | str) -> Reward:
    return make_reward(reward) if isinstance(reward, str) else reward


def reward_callable(
    scorer: RewardScorer, reward: Reward | str = "mean", batch_size: int = 32
) -> Callable[[Sequence[Prompt], Sequence[str]], list[float]]:
    """f(prompts, responses) -> conservative rewards as floats. ``reward``: a Reward or a spec string."""
    reward = _resolve(reward)

    def score(prompts: Sequence[Prompt], responses: Sequence[str]) -> list[float]:
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts and {len(responses)} responses")
        prediction = scorer.score(list(prompts), list(responses), batch_size=batch_size)
        return apply_reward(reward, prediction, prompts).tolist()

    score.__name__ = f"bayesrm_{getattr(reward, 'name', 'reward')}"
    return score


def trl_reward_func(scorer: RewardScorer, reward: Reward | str = "mean", batch_size: int = 32) -> Callable[..., list[float]]:
    """A TRL reward function: ``GRPOTrainer(..., reward_funcs=[trl_reward_func(scorer, "up:beta2=1")])``.

    Conversational prompts (lists of messages) are passed to the scorer as messages, so it renders
    them with its own chat template; the completion is the assistant text. TRL's extra keyword
    arguments (completion_ids, trainer_state, dataset columns, ...) are ignored.
    """
    plain = reward_callable(scorer, reward, batch_size)

    def reward_func(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return plain(list(prompts), [completion_text(c) for c in completions])

    reward_func.__name__ = plain.__name__  # TRL logs each reward under its function's __name__
    return reward_func
