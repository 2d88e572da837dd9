"""Sequence rewards for RL: a conservative reward of a scorer's RewardPrediction.

A *reward* is any callable ``RewardPrediction -> Tensor [B]`` (bayesrm.rewards objects such as
``UPPenalty(beta2)``: mu - beta2 (sigma - running mean of sigma), UP-RLHF eq. 14). Stateful
rewards expose ``state_dict()`` / ``load_state_dict()``; that state is checkpointed with the run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from bayesrm.generation.prompting import prompt_key  # the one prompt id (per-prompt reward statistics)
from bayesrm.types import Prompt, RewardPrediction, RewardScorer

Reward = Callable[[RewardPrediction], torch.Tensor]
logger = logging.getLogger(__name__)


def make_reward(spec: str, params: dict[str, Any] | None = None) -> Reward:
    """Deprecated alias of ``bayesrm.rewards.parse_reward(spec, **params)``, the one reward-spec parser."""
    import warnings

    from bayesrm.rewards import parse_reward

    warnings.warn("bayesrm.alignment.rl.make_reward is deprecated: use bayesrm.rewards.parse_reward(spec, **params)",
                  DeprecationWarning, stacklevel=2)
    return parse_reward(spec, **(params or {}))


def reward_input(reward: Reward, predictions: RewardPrediction | Sequence[RewardPrediction]) -> Any:
    """What ``reward`` is called with: one prediction, or for an AND sum ('A + B') one per term (one
    proxy per term, or the same proxy's prediction for every term)."""
    from bayesrm.rewards import SumOf

    preds = [predictions] if isinstance(predictions, RewardPrediction) else list(predictions)
    if isinstance(reward, SumOf):
        if len(preds) == 1:
            return preds * len(reward.rewards)
        if len(preds) != len(reward.rewards):
            raise ValueError(f"reward {reward.spec()!r} has {len(reward.rewards)} terms but {len(preds)} proxies score it")
        return preds
    if len(preds) != 1:
        raise ValueError(f"{len(preds)} proxies need a sum reward with one term per proxy ('A + B'), got {getattr(reward, 'spec', lambda: reward)()!r}")
    return preds[0]


def apply_reward(
    reward: Reward, prediction: RewardPrediction | Sequence[RewardPrediction], prompts: Sequence[Prompt]
) -> torch.Tensor:
    """reward(prediction) as float32 [B]; bayesrm rewards also get per-prompt ids (for log_sigmoid references).

    A bayesrm reward that needs reference statistics and has none (e.g. ``zscore|var:k=1``) is
    fitted on this first batch. In RL that batch comes from the initial policy, which is the
    reference policy (the LoRA update starts at zero), so the fit is on reference samples; the
    fitted statistics are then part of the reward's checkpointed state. Per-prompt levels
    (log_sigmoid) are not fitted here: they need reference samples of every prompt
    (:class:`~bayesrm.alignment.rl.reference.ReferenceLevels`), and a batch without them is refused.
    """
    from bayesrm.rewards import Reward as BayesrmReward

    target = reward_input(reward, prediction)
    n = len(target[0]) if isinstance(target, list) else len(target)
    if isinstance(reward, BayesrmReward):
        ids = [prompt_key(p) for p in prompts]
        if not reward.is_fitted():
            if reward.needs_reference():
                raise ValueError(
                    f"reward {reward.spec()!r} needs per-prompt reference levels from reference-policy samples of "
                    "every prompt: RLTrainer draws them itself; with reward_callable / trl_reward_func pass "
                    "reference=ReferenceLevels(...) (bayesrm.alignment.rl.reference)"
                )
            logger.info("fitting the reward's reference statistics (%s) on the first batch of %d responses", reward.spec(), len(ids))
            reward.fit(target, ids)
        out = reward(target, ids)
    else:
        out = reward(target)
    values = torch.as_tensor(out, dtype=torch.float32).reshape(-1)  # [B]
    if values.shape[0] != n:
        raise ValueError(f"reward returned {values.shape[0]} values for {n} responses")
    return values


@dataclass(frozen=True)
class ScoredBatch:
    """Scores of one batch of responses."""

    reward: torch.Tensor  # [B] conservative reward optimised by RL
    proxy: RewardPrediction  # the (first) proxy's full prediction (mean, var, members)
    gold: torch.Tensor | None  # [B] gold reward (logging only), or None
    proxies: tuple[RewardPrediction, ...] = ()  # every proxy's prediction (one per term of an AND sum)


def as_proxies(proxy: RewardScorer | Sequence[RewardScorer]) -> list[RewardScorer]:
    """One scorer or several (an AND sum's terms) as a list."""
    return list(proxy) if isinstance(proxy, (list, tuple)) else [proxy]


def score_batch(
    proxy: RewardScorer | Sequence[RewardScorer],
    reward: Reward,
    prompts: Sequence[Prompt],
    responses: Sequence[str],
    gold: RewardScorer | None = None,
    batch_size: int = 32,
) -> ScoredBatch:
    """Score responses with the proxy (or one proxy per term of an AND sum), apply the conservative
    reward (once: it may update running statistics), and score them with the gold judge when one is given."""
    predictions = [p.score(list(prompts), list(responses), batch_size=batch_size) for p in as_proxies(proxy)]
    values = apply_reward(reward, predictions, prompts)  # [B]
    gold_values = None
    if gold is not None:
        gold_values = gold.score(list(prompts), list(responses), batch_size=batch_size).mean.float()
    return ScoredBatch(reward=values, proxy=predictions[0], gold=gold_values, proxies=tuple(predictions))


# ---- reward state in checkpoints (tensors to safetensors, the rest to JSON) ----------------
def reward_state(reward: Reward) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, json) parts of a reward's state_dict(); both empty for a stateless reward."""
    get = getattr(reward, "state_dict", None)
    if get is None:
        return {}, {}
    tensors, plain = {}, {}
    for key, value in get().items():
        if isinstance(value, torch.Tensor):
            tensors[f"reward.{key}"] = value.detach().cpu()
        else:
            plain[key] = value
    return tensors, plain


def load_reward_state(reward: Reward, tensors: dict[str, torch.Tensor], plain: dict[str, Any]) -> None:
    """Restore what :func:`reward_state` saved."""
    state = dict(plain)
    state.update({k[len("reward.") :]: v for k, v in tensors.items() if k.startswith("reward.")})
    if not state:
        return
    load = getattr(reward, "load_state_dict", None)
    if load is None:
        raise ValueError(f"the checkpoint holds reward state {sorted(state)}, but {type(reward).__name__} takes none")
    load(state)
