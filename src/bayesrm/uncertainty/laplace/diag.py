"""Diagonal curvature: the exact diagonal of the Bradley-Terry GGN for each linear map of phi.

With the per-pair gradient M_n = sqrt(p_n (1 - p_n)) d f_n / dW [d_out, d_in] (see kfac.py), the GGN
block of W is sum_n vec(M_n) vec(M_n)^T; its diagonal is  h = sum_n M_n * M_n  (elementwise), the
"GGN / Fisher diagonal" of laplace-torch's DiagLaplace. It needs no Kronecker assumption and costs
O(d_out d_in) memory per map (the size of the weights), but drops all correlations between weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from bayesrm.uncertainty.laplace.jacobians import TokenGrads, pair_sum


@dataclass
class DiagonalBlock:
    """Curvature diag(vec h) of one linear map; h [d_out, d_in] in the weight's layout."""

    h: torch.Tensor

    @property
    def shape(self) -> tuple[int, int]:
        return self.h.shape[0], self.h.shape[1]

    @property
    def dtype(self) -> torch.dtype:
        return self.h.dtype

    @property
    def device(self) -> torch.device:
        return self.h.device

    def eigen_grid(self) -> list[tuple[torch.Tensor, int]]:
        """The curvature spectrum as (eigenvalues, multiplicity) groups: the diagonal itself."""
        return [(self.h.reshape(-1), 1)]

    def apply(self, X: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """fn(H) X for X [..., d_out, d_in] (elementwise: H is diagonal)."""
        return fn(self.h) * X

    def dense(self) -> torch.Tensor:
        """[d_out d_in, d_out d_in] the diagonal matrix (row-major vec order, for tests)."""
        return torch.diag(self.h.reshape(-1))

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "DiagonalBlock":
        return DiagonalBlock(self.h.to(device=device, dtype=dtype))

    def nbytes(self) -> int:
        return self.h.numel() * self.h.element_size()

    def state(self, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, config.json 'factors' entries) of this block in a posterior checkpoint."""
        return {f"{name}.diag": self.h}, {name: {"shape": list(self.shape)}}

    @classmethod
    def from_state(cls, name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> "DiagonalBlock":
        h, shape = tensors[f"{name}.diag"], [int(s) for s in meta[name]["shape"]]
        if list(h.shape) != shape:
            raise ValueError(f"{name}.diag has shape {tuple(h.shape)}, config.json says {shape}")
        if not bool(torch.isfinite(h).all()) or bool((h < 0).any()):
            raise ValueError(f"{name}.diag holds negative or non-finite curvature")
        return cls(h)


class DiagonalAccumulator:
    """Running sum of M_n * M_n over batches of pairs for one linear map."""

    def __init__(self, d_out: int, d_in: int, device: torch.device | None = None, dtype: torch.dtype = torch.float64):
        self.h = torch.zeros(d_out, d_in, device=device, dtype=dtype)  # [d_out, d_in]

    def update(self, tg: TokenGrads, weights: torch.Tensor, token_mask: torch.Tensor) -> None:
        """Add one batch of B pairs (arguments as KFACAccumulator.update; the mask is not needed)."""
        M = pair_sum(tg.per_example().to(self.h.dtype)) * weights.to(self.h.dtype)[:, None, None]  # [B, d_out, d_in]
        self.h += (M * M).sum(0)

    def all_reduce(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.h)

    def finalize(self, low_rank: int | None, dtype: torch.dtype, scale: float = 1.0) -> DiagonalBlock:
        """The diagonal block (times ``scale``); ``low_rank`` does not apply to a diagonal."""
        if not math.isfinite(float(self.h.sum())):
            raise ValueError("the curvature is not finite (NaN or inf in the model's outputs or gradients)")
        return DiagonalBlock((self.h * scale).to(dtype))

    def nbytes(self) -> int:
        return self.h.numel() * self.h.element_size()
