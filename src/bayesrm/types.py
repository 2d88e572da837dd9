"""The few types every part of bayesrm shares.

Contract (DESIGN.md section 2): every reward model, ensemble, posterior and gold judge scores
``(prompts, responses)`` and returns a :class:`RewardPrediction`. Conservative rewards are
functions of a RewardPrediction; nothing downstream reaches into a model's internals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence, Union, runtime_checkable

import torch

Message = dict[str, str]
"""A chat message, ``{"role": "user" | "assistant" | "system", "content": str}``."""

Prompt = Union[str, list[Message]]
"""A prompt is plain text or a list of chat messages (rendered with the backbone's chat template)."""


@dataclass(frozen=True)
class RewardPrediction:
    """Rewards for a batch of B (prompt, response) pairs.

    mean:    [B] predictive mean reward (the MAP reward for a point model).
    var:     [B] epistemic variance; zeros for a point model. For an ensemble it is the
             population variance over members (ddof=0): var = mean_k (r_k - mu)^2.
    members: [K, B] per-member rewards for ensembles, else None.
    """

    mean: torch.Tensor
    var: torch.Tensor
    members: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.mean.ndim != 1:
            raise ValueError(f"RewardPrediction.mean must have shape [B], got {tuple(self.mean.shape)}")
        if self.var.shape != self.mean.shape:
            raise ValueError(
                f"RewardPrediction.var must have the shape of mean {tuple(self.mean.shape)}, "
                f"got {tuple(self.var.shape)}"
            )
        if self.members is not None and (self.members.ndim != 2 or self.members.shape[1] != self.mean.shape[0]):
            raise ValueError(
                f"RewardPrediction.members must have shape [K, {self.mean.shape[0]}], "
                f"got {tuple(self.members.shape)}"
            )

    @property
    def std(self) -> torch.Tensor:
        """[B] epistemic standard deviation sqrt(var)."""
        return self.var.clamp_min(0).sqrt()

    def __len__(self) -> int:
        return self.mean.shape[0]

    @classmethod
    def point(cls, mean: torch.Tensor) -> "RewardPrediction":
        """A prediction with no epistemic uncertainty (var = 0)."""
        mean = mean.detach().float().reshape(-1)
        return cls(mean=mean, var=torch.zeros_like(mean))

    @classmethod
    def from_members(cls, members: torch.Tensor) -> "RewardPrediction":
        """Ensemble statistics from [K, B] member rewards: mean and population variance (ddof=0)."""
        members = members.detach().float()
        return cls(mean=members.mean(0), var=members.var(0, unbiased=False), members=members)

    @classmethod
    def mixture(cls, means: torch.Tensor, variances: torch.Tensor) -> "RewardPrediction":
        """Equal-weight Gaussian mixture of K components, e.g. Laplace on each ensemble member.

        means, variances: [K, B]. mixture mean = avg_k mu_k; var = avg_k var_k + var_k(mu_k) (ddof=0).
        """
        return cls(
            mean=means.mean(0),
            var=variances.mean(0) + means.var(0, unbiased=False),
            members=means,
        )

    @classmethod
    def concat(cls, parts: Sequence["RewardPrediction"]) -> "RewardPrediction":
        """Concatenate predictions for consecutive batches along B."""
        if not parts:
            return cls(mean=torch.zeros(0), var=torch.zeros(0))
        members = None
        if all(p.members is not None for p in parts):
            members = torch.cat([p.members for p in parts], dim=1)  # type: ignore[misc]
        return cls(
            mean=torch.cat([p.mean for p in parts]),
            var=torch.cat([p.var for p in parts]),
            members=members,
        )

    def save(self, path: str | Path) -> None:
        """Write mean / var (/ members) to a safetensors file atomically (readers see the old file or the new one)."""
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {"mean": self.mean.contiguous(), "var": self.var.contiguous()}
        if self.members is not None:
            tensors["members"] = self.members.contiguous()
        tmp = path.with_name(f".{path.name}.tmp")
        save_file(tensors, str(tmp))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "RewardPrediction":
        """Read what :meth:`save` wrote; a missing or corrupt file is a ValueError naming it."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            t = load_file(str(path))
            return cls(mean=t["mean"], var=t["var"], members=t.get("members"))
        except (SafetensorError, OSError, KeyError, ValueError) as err:
            raise ValueError(f"{path}: not a saved RewardPrediction ({err})") from err

    def to_dict(self) -> dict[str, list]:
        """Plain-Python form for JSON output."""
        out: dict[str, list] = {"mean": self.mean.tolist(), "var": self.var.tolist()}
        if self.members is not None:
            out["members"] = self.members.tolist()
        return out


@runtime_checkable
class RewardScorer(Protocol):
    """Anything that scores (prompt, response) pairs: reward models, ensembles, posteriors, gold judges."""

    def score(
        self,
        prompts: Sequence[Prompt],
        responses: Sequence[str],
        batch_size: int = 32,
        progress: bool = False,
    ) -> RewardPrediction: ...
