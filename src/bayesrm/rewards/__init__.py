"""Conservative rewards, reward transforms and their running statistics (DESIGN.md section 3).

Every reward maps a :class:`~bayesrm.types.RewardPrediction` (mean [B], var [B], members [K, B])
to a reward tensor [B]: ``reward(pred, prompt_ids=None)``. Build them directly or by name::

    from bayesrm.rewards import parse_reward
    reward = parse_reward("zscore|std:k=2|log_sigmoid:q=0.85")
    reward.fit(reference_pred, reference_prompt_ids)   # per-prompt levels, standardisation
    r = reward(pred, prompt_ids)                       # [B]
"""

from bayesrm.rewards.base import PromptId, Reward
from bayesrm.rewards.conservative import Mean, MinMember, StdPenalty, UPPenalty, VarPenalty
from bayesrm.rewards.registry import REWARD_NAMES, make_reward, parse_reward
from bayesrm.rewards.running import RunningMean
from bayesrm.rewards.transforms import LogSigmoid, PromptReference, Standardized, Standardizer, SumOf

__all__ = [
    "REWARD_NAMES",
    "LogSigmoid",
    "Mean",
    "MinMember",
    "PromptId",
    "PromptReference",
    "Reward",
    "RunningMean",
    "Standardized",
    "Standardizer",
    "StdPenalty",
    "SumOf",
    "UPPenalty",
    "VarPenalty",
    "make_reward",
    "parse_reward",
]
