"""RL fine-tuning against uncertainty-penalised rewards (UP-RLHF): PPO and RLOO for LoRA policies,
and adapters exposing bayesrm rewards to other RL frameworks (TRL and plain callables)."""

from bayesrm.alignment.rl.config import RLConfig
from bayesrm.alignment.rl.monitor import HackingMonitor, HackingMonitorCallback, MonitorConfig
from bayesrm.alignment.rl.reference import ReferenceLevels, reference_sampler
from bayesrm.alignment.rl.reward_fn import make_reward, score_batch
from bayesrm.alignment.rl.rollout import PolicyWithValue, Rollout, sample_rollout
from bayesrm.alignment.rl.trainer import RLTrainer, build_policy
from bayesrm.alignment.rl.trl_adapter import reward_callable, trl_reward_func

__all__ = [
    "HackingMonitor",
    "HackingMonitorCallback",
    "MonitorConfig",
    "ReferenceLevels",
    "reference_sampler",
    "PolicyWithValue",
    "RLConfig",
    "RLTrainer",
    "Rollout",
    "build_policy",
    "make_reward",
    "reward_callable",
    "sample_rollout",
    "score_batch",
    "trl_reward_func",
]
