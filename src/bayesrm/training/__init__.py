"""Bradley-Terry reward-model training."""

from bayesrm.training.losses import bradley_terry_loss
from bayesrm.training.trainer import RewardTrainer, RewardTrainingConfig, train_reward_model

__all__ = ["RewardTrainer", "RewardTrainingConfig", "bradley_terry_loss", "train_reward_model"]
