"""Running statistics that conservative rewards carry across batches (and across an RL resume)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import torch


@dataclass
class RunningMean:
    """Exact running mean of every value seen so far (count-weighted, float64).

    ``update(x)`` merges a batch: mean <- mean + (sum(x) - n * mean) / (count + n), so the result
    equals the plain mean of all values ever passed, whatever the batch sizes. The state is two
    scalars; ``state_dict()`` returns tensors so it can go into a safetensors file.
    """

    count: int = 0
    mean: float = 0.0

    def update(self, values: torch.Tensor) -> float:
        """Add every element of ``values`` (any shape) and return the new mean."""
        n = values.numel()
        if n == 0:
            return self.mean
        batch_mean = float(values.detach().double().mean())
        if batch_mean != batch_mean:  # NaN
            raise ValueError("RunningMean.update got NaN values")
        self.count += n
        self.mean += (batch_mean - self.mean) * n / self.count
        return self.mean

    def reset(self) -> None:
        self.count, self.mean = 0, 0.0

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {
            "count": torch.tensor(self.count, dtype=torch.int64),
            "mean": torch.tensor(self.mean, dtype=torch.float64),
        }

    def load_state_dict(self, state: Mapping[str, torch.Tensor | int | float]) -> None:
        missing = {"count", "mean"} - set(state)
        if missing:
            raise KeyError(f"RunningMean state is missing {sorted(missing)}; got keys {sorted(state)}")
        count = int(state["count"])
        if count < 0:
            raise ValueError(f"RunningMean state has a negative count ({count})")
        self.count, self.mean = count, float(state["mean"])
