"""K-FAC curvature of the Bradley-Terry GGN for each linear map of phi (Martens & Grosse 2015).

GGN:  H = sum_n p_n (1 - p_n) g_n g_n^T,  g_n = d f_n / d phi,  f_n = r(x_n, y_w) - r(x_n, y_l).
For one linear map W [d_out, d_in] with per-pair gradient M_n = dsqrt(lam_n) f_n / dW
(lam_n = p_n (1 - p_n)), the block of H in row-major vec(W) order is  sum_n vec(M_n) vec(M_n)^T,
approximated by one Kronecker product  G (x) A  (G [d_out, d_out] output side, A [d_in, d_in] input side).

Two ways to form the factors (``KFAC_MODES``), both sums over data (all-reduced across processes):

``pair`` (default)  The per-pair gradient M_n = sum_{t in y_w} g_t a_t^T - sum_{t in y_l} g_t a_t^T of
    one pair, chosen and rejected together, is the unit:
        A = sum_n M_n^T M_n,   G = sum_n M_n M_n^T / c,   c = sum_n ||M_n||_F^2.
    It is "K-FAC-reduce" over all tokens of a pair (Eschenhagen et al. 2023: one output per
    sequence, the reduce setting) without assuming M_n is rank one: the factor from module inputs
    is weighted by the output gradients and vice versa. It keeps the cancellation between the two
    sides of a pair (e.g. d f / d head-bias = 0), has trace(G (x) A) = trace(H) exactly, and is
    exact when d_out = 1 or d_in = 1: the head, and both LoRA maps at rank r = 1. Rank-one M_n
    alone is not enough (a sum of Kronecker products is not one: about 0.56 relative error in
    tests/test_laplace_core.py with d_out = 4, d_in = 6).
``expand``  Classic K-FAC-expand: every non-pad token of every sequence is an example,
        A = sum_t a_t a_t^T / n_tokens,   G = sum_t lam_n g_t g_t^T;
    it drops all cross terms between tokens, including those between y_w and y_l of a pair.

Each factor is eigendecomposed; a factor larger than ``low_rank`` keeps its top-k eigenpairs and a
scalar for the rest of its spectrum (the mean of the remaining eigenvalues, so the trace is kept).
A factor larger than ``stream_above`` is never formed as a d x d matrix: its top eigenpairs are
updated batch by batch (factors.StreamingFactorSum), so the fit's memory is O(d k) per factor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from bayesrm.uncertainty.laplace.factors import DenseFactorSum, EigenFactor, StreamingFactorSum, single_threaded
from bayesrm.uncertainty.laplace.jacobians import TokenGrads, pair_sum

__all__ = ["KFAC_MODES", "EigenFactor", "KFACAccumulator", "KroneckerBlock", "single_threaded"]

KFAC_MODES = ("pair", "expand")


@dataclass
class KroneckerBlock:
    """Curvature G (x) A of one linear map (row-major vec order) with eigendecomposed factors."""

    G: EigenFactor  # output side, d_out
    A: EigenFactor  # input side, d_in

    @property
    def shape(self) -> tuple[int, int]:
        return self.G.dim, self.A.dim

    def eigen_grid(self) -> list[tuple[torch.Tensor, int]]:
        """The curvature spectrum as (eigenvalues, multiplicity) groups: top x top, top x rest, ..."""
        g, a = self.G.vals, self.A.vals
        g_rest = torch.tensor([self.G.rest], dtype=g.dtype, device=g.device)
        a_rest = torch.tensor([self.A.rest], dtype=a.dtype, device=a.device)
        return [
            (torch.outer(g, a).reshape(-1), 1),
            (g * self.A.rest, self.A.n_rest),
            (a * self.G.rest, self.G.n_rest),
            (g_rest * a_rest, self.G.n_rest * self.A.n_rest),
        ]

    def apply(self, X: torch.Tensor, fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """fn(H) X for matrices X [..., d_out, d_in] in the eigenbasis of H = G (x) A (fn elementwise
        on eigenvalues), e.g. fn = 1 / (h + lambda) gives Sigma X. Four parts: G top/rest x A top/rest."""
        QG, QA = self.G.vecs, self.A.vecs
        XA = X @ QA  # [..., d_out, kA]
        XrA = X - XA @ QA.T  # [..., d_out, d_in] component in A's rest space
        Ytt = QG.T @ XA  # [..., kG, kA]
        Ytr = QG.T @ XrA  # [..., kG, d_in]
        g, a = self.G.vals, self.A.vals
        out = QG @ (fn(torch.outer(g, a)) * Ytt) @ QA.T
        out = out + QG @ (fn(g * self.A.rest)[:, None] * Ytr)
        out = out + fn(self.G.rest * a) * (XA - QG @ Ytt) @ QA.T
        rest = fn(torch.tensor(self.G.rest * self.A.rest, dtype=X.dtype, device=X.device))
        return out + rest * (XrA - QG @ Ytr)

    def dense(self) -> torch.Tensor:
        """[d_out d_in, d_out d_in] the Kronecker product G (x) A (for tests)."""
        return torch.kron(self.G.dense(), self.A.dense())

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "KroneckerBlock":
        return KroneckerBlock(self.G.to(device, dtype), self.A.to(device, dtype))

    def nbytes(self) -> int:
        return self.G.nbytes() + self.A.nbytes()

    @property
    def dtype(self) -> torch.dtype:
        return self.A.vecs.dtype

    @property
    def device(self) -> torch.device:
        return self.A.vecs.device

    def state(self, name: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, config.json 'factors' entries) of this block in a posterior checkpoint."""
        tensors: dict[str, torch.Tensor] = {}
        meta: dict[str, Any] = {}
        for side, factor in (("G", self.G), ("A", self.A)):
            tensors[f"{name}.{side}.vecs"], tensors[f"{name}.{side}.vals"] = factor.vecs, factor.vals
            meta[f"{name}.{side}"] = {"rest": factor.rest, "dim": factor.dim}
        return tensors, meta

    @classmethod
    def from_state(cls, name: str, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> "KroneckerBlock":
        """Inverse of :meth:`state` (KeyError when an entry is missing)."""
        sides = {}
        for side in ("G", "A"):
            info = meta[f"{name}.{side}"]
            vecs, vals = tensors[f"{name}.{side}.vecs"], tensors[f"{name}.{side}.vals"]
            if vecs.ndim != 2 or vals.ndim != 1 or vecs.shape != (int(info["dim"]), vals.shape[0]):
                raise ValueError(f"{name}.{side}: eigenvectors {tuple(vecs.shape)} and eigenvalues {tuple(vals.shape)} do not fit dim {info['dim']}")
            sides[side] = EigenFactor(vecs, vals, float(info["rest"]), int(info["dim"]))
        return cls(G=sides["G"], A=sides["A"])


class KFACAccumulator:
    """Running sums of the K-FAC factors of one linear map over batches of pairs.

    Each side is a :class:`DenseFactorSum`, or a :class:`StreamingFactorSum` (top ``low_rank +
    oversample`` eigenpairs) when its dimension exceeds ``stream_above`` and ``low_rank`` is set.
    """

    def __init__(self, d_out: int, d_in: int, mode: str = "pair", device: torch.device | None = None,
                 dtype: torch.dtype = torch.float64, low_rank: int | None = None,
                 stream_above: int | None = None, oversample: int = 16):
        if mode not in KFAC_MODES:
            raise ValueError(f"kfac mode must be one of {KFAC_MODES}, got {mode!r}")
        self.mode, self.low_rank = mode, low_rank

        def side(d: int) -> DenseFactorSum | StreamingFactorSum:
            if low_rank is not None and stream_above is not None and d > stream_above and d > low_rank + oversample:
                return StreamingFactorSum(d, low_rank + oversample, device=device)
            return DenseFactorSum(d, device=device, dtype=dtype)

        self.dtype = dtype
        self.A, self.G = side(d_in), side(d_out)
        self.norm = torch.zeros((), device=device, dtype=dtype)  # pair: c = sum ||M_n||^2; expand: n_tokens

    def update(self, tg: TokenGrads, weights: torch.Tensor, token_mask: torch.Tensor) -> None:
        """Add one batch of B pairs.

        tg: hooked inputs / margin gradients of the 2B rows (chosen rows, then rejected rows);
        weights: [B] sqrt(p_n (1 - p_n)); token_mask: [2B, T] attention mask of the rows.
        """
        dt = self.dtype
        w_rows = torch.cat([weights, weights]).to(dt)  # [2B]
        if self.mode == "pair":
            M = pair_sum(tg.per_example().to(dt)) * weights.to(dt)[:, None, None]  # [B, d_out, d_in]
            for fsum, rows, eq in ((self.A, M, "noi,noj->ij"), (self.G, M.transpose(1, 2), "noi,npi->op")):
                if fsum.streamed:
                    fsum.add(rows.reshape(-1, rows.shape[-1]))  # [B d_out, d_in] or [B d_in, d_out]
                else:
                    fsum.add_matrix(torch.einsum(eq, M, M))
            self.norm += (M * M).sum()
            return
        a, g = tg.inputs.to(dt), tg.grads.to(dt) * (w_rows[:, None, None] if tg.grads.ndim == 3 else w_rows[:, None])
        if a.ndim == 3:  # [2B, T, d]: keep non-pad tokens only
            keep = token_mask.bool()
            a, g = a[keep], g[keep]  # [n_tok, d]
        self.A.add(a)
        self.G.add(g)
        self.norm += a.shape[0]

    def all_reduce(self) -> None:
        """Sum the factors over processes when torch.distributed is initialised."""
        if dist.is_available() and dist.is_initialized():
            self.A.all_reduce()
            self.G.all_reduce()
            dist.all_reduce(self.norm)

    def finalize(self, low_rank: int | None, dtype: torch.dtype, scale: float = 1.0) -> KroneckerBlock:
        """Normalise, eigendecompose and (for large factors) truncate; ``scale`` multiplies the
        curvature (a subsample's sum rescaled to all pairs)."""
        norm = float(self.norm)
        if not math.isfinite(norm):
            raise ValueError("the curvature is not finite (NaN or inf in the model's outputs or gradients)")
        if norm == 0:  # no data, or all gradients zero (e.g. LoRA A while B = 0): the posterior is the prior
            a_scale, g_scale = 1.0, 1.0
        elif self.mode == "pair":  # G (x) A = (sum M M^T / c) (x) sum M^T M: the scale goes on A
            a_scale, g_scale = scale, 1.0 / norm
        else:
            a_scale, g_scale = 1.0 / norm, scale
        return KroneckerBlock(G=self.G.factor(low_rank, g_scale, dtype), A=self.A.factor(low_rank, a_scale, dtype))

    def nbytes(self) -> int:
        """Bytes of the running sums (what the fit keeps between batches)."""
        return self.A.nbytes() + self.G.nbytes()
