"""Sums of outer products S = sum_batches X^T X (X [m, d] rows) for the K-FAC factors, dense or streamed low-rank.

``DenseFactorSum`` keeps S as a d x d matrix (float64 on CPU): exact, the reference, O(d^2) memory.

``StreamingFactorSum`` keeps only the top l = k + oversample eigenpairs of the running sum and its
exact trace, so memory is O(d l) for any amount of data (incremental SVD, Brand 2002, with
truncation as in Frequent Directions, Liberty 2013): a batch of rows is merged by one thin QR of
Z = [U diag(s)^{1/2}, X^T] [d, l + m] and an eigendecomposition of the (l + m) x (l + m) core,
and the eigenpairs beyond l are dropped. Each step drops a PSD part, so the kept matrix never
exceeds S (Loewner order); what was dropped is not lost from the trace, which is summed exactly
and, at the end, spread as one scalar over the d - k directions outside the top k (the same
trace-keeping remainder the dense path uses). The top-k spectrum is close to the dense one when
the spectrum decays past k (tests/test_laplace_lowrank.py states the tolerances).

Under torch.distributed the dense sum is all-reduced; streamed sums are all-gathered ([d, l] per
process) and merged in rank order, so every process ends with the same factor.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

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



class DenseFactorSum:
    """S = sum X^T X as a dense [d, d] matrix."""

    streamed = False

    def __init__(self, dim: int, device: torch.device | None = None, dtype: torch.dtype = torch.float64):
        self.dim = dim
        self.matrix = torch.zeros(dim, dim, device=device, dtype=dtype)  # [d, d]

    def add(self, rows: torch.Tensor) -> None:
        """Add X^T X for rows X [m, d]."""
        x = rows.to(self.matrix.dtype)
        self.matrix += x.T @ x

    def add_matrix(self, matrix: torch.Tensor) -> None:
        """Add a [d, d] PSD matrix (already summed, e.g. einsum over pairs)."""
        self.matrix += matrix.to(self.matrix.dtype)

    def all_reduce(self) -> None:
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(self.matrix)

    def factor(self, low_rank: int | None, scale: float, dtype: torch.dtype) -> EigenFactor:
        return EigenFactor.from_matrix(self.matrix * scale, low_rank).to(dtype=dtype)

    def nbytes(self) -> int:
        return self.matrix.numel() * self.matrix.element_size()


class StreamingFactorSum:
    """The top ``keep`` eigenpairs of S = sum X^T X, updated batch by batch, and S's exact trace.

    vecs [d, l] orthonormal (stored in ``store_dtype``), vals [l] descending (float64); the merge
    arithmetic runs in float64. Rows are merged in chunks of at most ``chunk`` rows.
    """

    streamed = True

    def __init__(self, dim: int, keep: int, device: torch.device | None = None,
                 store_dtype: torch.dtype = torch.float32, chunk: int | None = None):
        if keep < 1:
            raise ValueError(f"a streamed factor keeps at least one eigenpair, got {keep}")
        self.dim, self.keep = dim, min(keep, dim)
        self.chunk = chunk or max(2 * self.keep, 64)
        self.work_dtype = torch.float32 if device is not None and torch.device(device).type == "mps" else torch.float64
        self.vecs = torch.zeros(dim, 0, device=device, dtype=store_dtype)  # [d, l]
        self.vals = torch.zeros(0, device=device, dtype=self.work_dtype)  # [l]
        self.trace = torch.zeros((), device=device, dtype=self.work_dtype)

    def add(self, rows: torch.Tensor) -> None:
        """Merge X^T X for rows X [m, d] into the kept eigenpairs (chunks of ``chunk`` rows)."""
        x = rows.to(self.work_dtype)
        self.trace += (x * x).sum()
        for start in range(0, x.shape[0], self.chunk):
            self._merge(x[start : start + self.chunk].T)  # [d, m]

    def _merge(self, cols: torch.Tensor) -> None:
        """Top-l eigenpairs of U diag(s) U^T + C C^T for new columns C [d, m]."""
        Z = torch.cat([self.vecs.to(self.work_dtype) * self.vals.sqrt(), cols], 1)  # [d, l + m]
        with single_threaded(Z.device):
            Q, R = torch.linalg.qr(Z)  # Q [d, l + m], R [l + m, l + m]
            vals, W = torch.linalg.eigh(R @ R.T)  # ascending; Z Z^T = Q (R R^T) Q^T
        l = min(self.keep, vals.shape[0])
        self.vals = vals.flip(0)[:l].clamp_min(0.0)  # [l]
        self.vecs = (Q @ W.flip(1)[:, :l]).to(self.vecs.dtype)  # [d, l]

    def all_reduce(self) -> None:
        """Merge every process's kept eigenpairs (in rank order) and sum the traces."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        d, l = self.dim, self.keep
        mine = torch.zeros(d, l, device=self.vecs.device, dtype=self.work_dtype)  # [d, l] padded to l columns
        mine[:, : self.vals.shape[0]] = self.vecs.to(self.work_dtype) * self.vals.sqrt()
        gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, mine)
        dist.all_reduce(self.trace)
        self.vecs, self.vals = self.vecs[:, :0], self.vals[:0]
        for part in gathered:
            self._merge(part)

    def factor(self, low_rank: int | None, scale: float, dtype: torch.dtype) -> EigenFactor:
        """Top ``low_rank`` eigenpairs (times scale) and the trace-keeping scalar for the rest."""
        k = min(low_rank or self.keep, self.vals.shape[0], self.dim)
        vals = self.vals[:k] * scale
        trace = float(self.trace) * scale
        rest = max(trace - float(vals.sum()), 0.0) / (self.dim - k) if k < self.dim else 0.0
        return EigenFactor(self.vecs[:, :k].to(dtype).contiguous(), vals.to(dtype).contiguous(), rest, self.dim)

    def nbytes(self) -> int:
        return self.vecs.numel() * self.vecs.element_size() + self.vals.numel() * self.vals.element_size() + 8
