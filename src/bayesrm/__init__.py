"""bayesrm: uncertainty-aware reward models for LLM alignment."""

from bayesrm.types import RewardPrediction, RewardScorer

__version__ = "0.1.0"
__all__ = ["RewardPrediction", "RewardScorer", "__version__"]
