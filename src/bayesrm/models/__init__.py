"""Reward-model backbones, the LoRA reward model, and the shared checkpoint format."""

from bayesrm.models.checkpoint import CheckpointError
from bayesrm.models.reward_model import RewardModel, RewardModelConfig

__all__ = ["CheckpointError", "RewardModel", "RewardModelConfig"]
