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
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.distributed as dist


@contextmanager
def single_threaded(device: torch.device) -> Iterator[None]:
    """Run a small CPU decomposition on one thread.

    Measured here: eigh of a 384 x 384 matrix takes 44 ms on one thread but about 10 s with two
    OpenMP threads when the cores are shared with other work (LAPACK's threaded tridiagonal
    reduction spins). On GPUs this does nothing.
    """
    if device.type != "cpu":
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)

from bayesrm.uncertainty.laplace.jacobians import TokenGrads, pair_sum

KFAC_MODES = ("pair", "expand")


@dataclass
class EigenFactor:
    """A symmetric PSD d x d matrix as Q diag(vals) Q^T + rest (I - Q Q^T).

    vecs: [d, k] orthonormal top eigenvectors; vals: [k] their eigenvalues (descending);
    rest: the eigenvalue on the (d - k)-dimensional complement (0 when k = d).
    """

    vecs: torch.Tensor
    vals: torch.Tensor
    rest: float
    dim: int

    @classmethod
    def from_matrix(cls, matrix: torch.Tensor, low_rank: int | None = None) -> "EigenFactor":
        """Eigendecompose (in float64); keep the top ``low_rank`` eigenpairs when d > low_rank."""
        d = matrix.shape[0]
        m = matrix.double()
        with single_threaded(m.device):
            vals, vecs = torch.linalg.eigh((m + m.T) / 2)  # ascending
        vals, vecs = vals.flip(0).clamp_min(0.0), vecs.flip(1)
        k = d if low_rank is None or d <= low_rank else low_rank
        rest = float((torch.trace(m).clamp_min(0) - vals[:k].sum()).clamp_min(0) / (d - k)) if k < d else 0.0
        return cls(vecs[:, :k].to(matrix.dtype).contiguous(), vals[:k].to(matrix.dtype).contiguous(), rest, d)

    @property
    def rank(self) -> int:
        return self.vals.shape[0]

    @property
    def n_rest(self) -> int:
        return self.dim - self.rank

    def dense(self) -> torch.Tensor:
        """[d, d] the matrix this factor represents (for tests and small factors)."""
        q = self.vecs
        eye = torch.eye(self.dim, dtype=q.dtype, device=q.device)
        return q @ torch.diag(self.vals) @ q.T + self.rest * (eye - q @ q.T)

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "EigenFactor":
        return EigenFactor(self.vecs.to(device=device, dtype=dtype), self.vals.to(device=device, dtype=dtype), self.rest, self.dim)

    def nbytes(self) -> int:
        return self.vecs.numel() * self.vecs.element_size() + self.vals.numel() * self.vals.element_size() + 8


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


class KFACAccumulator:
    """Running sums of the K-FAC factors of one linear map over batches of pairs."""

    def __init__(self, d_out: int, d_in: int, mode: str = "pair", device: torch.device | None = None, dtype: torch.dtype = torch.float64):
        if mode not in KFAC_MODES:
            raise ValueError(f"kfac mode must be one of {KFAC_MODES}, got {mode!r}")
        self.mode = mode
        self.A = torch.zeros(d_in, d_in, device=device, dtype=dtype)
        self.G = torch.zeros(d_out, d_out, device=device, dtype=dtype)
        self.norm = torch.zeros((), device=device, dtype=dtype)  # pair: c = sum ||M_n||^2; expand: n_tokens

    def update(self, tg: TokenGrads, weights: torch.Tensor, token_mask: torch.Tensor) -> None:
        """Add one batch of B pairs.

        tg: hooked inputs / margin gradients of the 2B rows (chosen rows, then rejected rows);
        weights: [B] sqrt(p_n (1 - p_n)); token_mask: [2B, T] attention mask of the rows.
        """
        dt = self.A.dtype
        w_rows = torch.cat([weights, weights]).to(dt)  # [2B]
        if self.mode == "pair":
            M = pair_sum(tg.per_example().to(dt)) * weights.to(dt)[:, None, None]  # [B, d_out, d_in]
            self.A += torch.einsum("noi,noj->ij", M, M)
            self.G += torch.einsum("noi,npi->op", M, M)
            self.norm += (M * M).sum()
            return
        a, g = tg.inputs.to(dt), tg.grads.to(dt) * (w_rows[:, None, None] if tg.grads.ndim == 3 else w_rows[:, None])
        if a.ndim == 3:  # [2B, T, d]: keep non-pad tokens only
            keep = token_mask.bool()
            a, g = a[keep], g[keep]  # [n_tok, d]
        self.A += a.T @ a
        self.G += g.T @ g
        self.norm += a.shape[0]

    def all_reduce(self) -> None:
        """Sum the factors over processes when torch.distributed is initialised."""
        if dist.is_available() and dist.is_initialized():
            for t in (self.A, self.G, self.norm):
                dist.all_reduce(t)

    def finalize(self, low_rank: int | None, dtype: torch.dtype) -> KroneckerBlock:
        """Normalise, eigendecompose and (for large factors) truncate."""
        norm = float(self.norm)
        if not math.isfinite(norm):
            raise ValueError("the curvature is not finite (NaN or inf in the model's outputs or gradients)")
        if norm == 0:  # no data, or all gradients zero (e.g. LoRA A while B = 0): the posterior is the prior
            A, G = self.A, self.G
        elif self.mode == "pair":
            A, G = self.A, self.G / norm
        else:
            A, G = self.A / norm, self.G
        return KroneckerBlock(G=EigenFactor.from_matrix(G, low_rank).to(dtype=dtype), A=EigenFactor.from_matrix(A, low_rank).to(dtype=dtype))
