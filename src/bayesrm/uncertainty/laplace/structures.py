"""Curvature structures of a Laplace posterior behind one interface (as laplace-torch separates
its Hessian structures: KronLaplace, DiagLaplace, ...), chosen by name with LaplaceConfig.structure.

A structure is an accumulator (summed over batches of pairs, then finalised) and the block it
produces for each linear map of phi. Every block offers what the evidence, the predictives and
the checkpoint need, and nothing else:

    shape, dtype, device             (d_out, d_in) of the map
    eigen_grid()                     spectrum as (eigenvalues, multiplicity) groups -> log det(H + lambda I)
    apply(X, fn)                     fn(H) X for X [..., d_out, d_in] -> J Sigma J^T, Sigma^{1/2} z
    dense(), to(), nbytes()          tests, device moves, memory
    state(name) / from_state(...)    tensors + config.json entries of a posterior checkpoint

Registered: ``kfac`` (kfac.KroneckerBlock, the default) and ``diag`` (diag.DiagonalBlock). A new
structure is one more :func:`register_structure` call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol

import torch

from bayesrm.uncertainty.laplace.diag import DiagonalAccumulator, DiagonalBlock
from bayesrm.uncertainty.laplace.jacobians import TokenGrads
from bayesrm.uncertainty.laplace.kfac import KFACAccumulator, KroneckerBlock

if TYPE_CHECKING:
    from bayesrm.uncertainty.laplace.config import LaplaceConfig


class CurvatureBlock(Protocol):
    """The curvature of one linear map (see the module docstring)."""

    @property
    def shape(self) -> tuple[int, int]: ...
    @property
    def dtype(self) -> torch.dtype: ...
    @property
    def device(self) -> torch.device: ...
    def eigen_grid(self) -> list[tuple[torch.Tensor, int]]: ...
    def apply(self, X: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor: ...
    def dense(self) -> torch.Tensor: ...
    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "CurvatureBlock": ...
    def nbytes(self) -> int: ...
    def state(self, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]: ...


class CurvatureAccumulator(Protocol):
    """Sums of one map's curvature over batches of pairs."""

    def update(self, tg: TokenGrads, weights: torch.Tensor, token_mask: torch.Tensor) -> None: ...
    def all_reduce(self) -> None: ...
    def finalize(self, low_rank: int | None, dtype: torch.dtype, scale: float = 1.0) -> CurvatureBlock: ...
    def nbytes(self) -> int: ...


@dataclass(frozen=True)
class Structure:
    """A registered curvature structure: how to accumulate it and how to load its blocks."""

    name: str
    accumulator: Callable[[tuple[int, int], "LaplaceConfig", torch.device, torch.dtype], CurvatureAccumulator]
    """(shape (d_out, d_in), config, device, accumulation dtype) -> a fresh accumulator."""
    load: Callable[[str, dict[str, torch.Tensor], dict[str, Any]], CurvatureBlock]
    """(block name, checkpoint tensors, config.json 'factors') -> the block (KeyError / ValueError when malformed)."""


STRUCTURES: dict[str, Structure] = {}
"""Curvature structures by name (LaplaceConfig.structure)."""


def register_structure(structure: Structure) -> Structure:
    STRUCTURES[structure.name] = structure
    return structure


def get_structure(name: str) -> Structure:
    try:
        return STRUCTURES[name]
    except KeyError:
        raise ValueError(f"unknown curvature structure {name!r}; known: {sorted(STRUCTURES)}") from None


register_structure(Structure(
    "kfac",
    lambda shape, cfg, device, dtype: KFACAccumulator(*shape, mode=cfg.kfac, device=device, dtype=dtype, low_rank=cfg.low_rank,
                                                      stream_above=cfg.stream_above, oversample=cfg.oversample),
    KroneckerBlock.from_state,
))
register_structure(Structure(
    "diag",
    lambda shape, cfg, device, dtype: DiagonalAccumulator(*shape, device=device, dtype=dtype),
    DiagonalBlock.from_state,
))
