"""Conservative rewards: functions of (mean mu, variance sigma^2, members r_k) (DESIGN.md section 3).

| name              | formula                          | source                                           |
|-------------------|----------------------------------|--------------------------------------------------|
| ``mean``          | mu                               | MAP / ensemble mean                              |
| ``std`` / ``lcb`` | mu - k sigma                     | Yang et al. 2024 (Laplace-LoRA RMs); Zhang et al. 2024 (efficient ensembles, LCB) |
| ``var`` / ``uwo`` | mu - k sigma^2                   | Yang et al. 2024; Coste et al. 2024 (UWO)        |
| ``min``           | min_k r_k                        | worst-case ensemble (Coste et al. 2024)          |
| ``up``            | mu - beta2 (sigma - u_bar)       | Zhai et al. 2024, UP-RLHF eq. 14                 |

sigma is the epistemic standard deviation ``pred.std``; for ensembles it is the population
standard deviation over members (ddof=0). The penalty scale k is in reward units, so it only
means something relative to the reward's spread: standardise (``transforms.Standardized``) and
sweep k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import torch

from bayesrm.rewards.base import PromptIds, Reward, param
from bayesrm.rewards.running import RunningMean
from bayesrm.types import RewardPrediction


def _check_nonnegative(name: str, value: float) -> None:
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0 (a penalty weight), got {value!r}")


@dataclass
class Mean(Reward):
    """r = mu: the MAP reward of a point model, or the ensemble / posterior mean."""

    name = "mean"

    def __call__(self, pred: RewardPrediction, prompt_ids: PromptIds | None = None) -> torch.Tensor:
        return pred.mean  # [B]


@dataclass
class StdPenalty(Reward):
    """r = mu - k sigma, a lower confidence bound (alias ``lcb``).

    Yang et al. 2024, "Bayesian reward models for LLM alignment" (Laplace-LoRA);
    Zhang et al. 2024, "Improving reinforcement learning from human feedback with efficient
    reward model ensemble" (LCB).
    """

    name = "std"
    k: float = param(1.0)

    def __post_init__(self) -> None:
        _check_nonnegative("StdPenalty.k", self.k)

    def __call__(self, pred: RewardPrediction, prompt_ids: PromptIds | None = None) -> torch.Tensor:
        return pred.mean - self.k * pred.std  # [B]


@dataclass
class VarPenalty(Reward):
    """r = mu - k sigma^2, uncertainty-weighted optimisation (alias ``uwo``).

    Yang et al. 2024 (Laplace-LoRA RMs); Coste et al. 2024, "Reward model ensembles help mitigate
    overoptimization" (UWO).
    """

    name = "var"
    k: float = param(1.0)

    def __post_init__(self) -> None:
        _check_nonnegative("VarPenalty.k", self.k)

    def __call__(self, pred: RewardPrediction, prompt_ids: PromptIds | None = None) -> torch.Tensor:
        return pred.mean - self.k * pred.var.clamp_min(0)  # [B]


@dataclass
class MinMember(Reward):
    """r = min_k r_k, the worst-case ensemble member (Coste et al. 2024, WCO)."""

    name = "min"
    uses_members = True

    def __call__(self, pred: RewardPrediction, prompt_ids: PromptIds | None = None) -> torch.Tensor:
        if pred.members is None:
            raise ValueError(
                "the 'min' reward needs ensemble members (RewardPrediction.members of shape [K, B]), "
                "but this prediction has none (a single model or a Laplace posterior); use 'std' or 'var'"
            )
        return pred.members.amin(dim=0)  # [K, B] -> [B]


@dataclass
class UPPenalty(Reward):
    """r = mu - beta2 (sigma - u_bar), UP-RLHF eq. 14 (Zhai et al. 2024).

    u_bar is the running mean of sigma over every sample scored so far ("the mean uncertainty of
    all previously seen samples"); subtracting it removes the ensemble's overall scale of
    uncertainty, so only above-average uncertainty is penalised.

    Choice made here: the current batch is merged into u_bar *before* it is subtracted. u_bar is
    then defined from the first batch on (which is centred on its own mean uncertainty), and
    differs from "previous batches only" by one batch's weight, which vanishes as samples
    accumulate. Set ``update=False`` to score with a frozen u_bar (evaluation, best-of-n on
    held-out samples); that requires state from earlier calls or ``load_state_dict``.
    ``state_dict()`` holds (count, u_bar) for resuming RL.
    """

    name = "up"
    beta2: float = param(1.0)
    update: bool = True
    stats: RunningMean = field(default_factory=RunningMean)

    def __post_init__(self) -> None:
        _check_nonnegative("UPPenalty.beta2", self.beta2)

    @property
    def u_bar(self) -> float:
        return self.stats.mean

    def __call__(self, pred: RewardPrediction, prompt_ids: PromptIds | None = None) -> torch.Tensor:
        sigma = pred.std  # [B]
        if self.update:
            self.stats.update(sigma)
        elif self.stats.count == 0:
            raise RuntimeError(
                "UPPenalty(update=False) has no running mean uncertainty yet: score some samples with "
                "update=True or load_state_dict() from a saved run first"
            )
        return pred.mean - self.beta2 * (sigma - self.stats.mean)  # [B]

    def _own_state(self) -> dict[str, torch.Tensor]:
        return {f"stats.{k}": v for k, v in self.stats.state_dict().items()}

    def _load_own_state(self, state: Mapping[str, torch.Tensor]) -> None:
        extra = set(state) - {"stats.count", "stats.mean"}
        if extra:
            raise KeyError(f"UPPenalty state has unexpected keys {sorted(extra)}")
        self.stats.load_state_dict({k.removeprefix("stats."): v for k, v in state.items()})
