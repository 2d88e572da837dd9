"""Preference metrics: accuracy, Bradley-Terry NLL, Brier, ECE (and UP-RLHF's variant), AUROC, correlations.

Conventions. Every pair is labelled "chosen wins" (label 1); ``margin`` is f = r(chosen) - r(rejected)
and ``p`` the predicted P(chosen > rejected). Inputs may be numpy arrays, torch tensors or
sequences; everything is computed in float64 numpy and returned as Python floats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Union

import numpy as np
import torch

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float]]

N_BINS = 15
"""ECE bins, as in UP-RLHF (section 4.2) and Guo et al. (2017)."""


def as_float64(x: ArrayLike, name: str = "values") -> np.ndarray:
    """A 1-D float64 numpy copy of ``x`` (torch tensors are detached and moved to CPU)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(x, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    return arr


def sigmoid(x: ArrayLike) -> np.ndarray:
    """Numerically stable logistic function, float64."""
    x = as_float64(x)
    e = np.exp(-np.abs(x))  # in (0, 1]: never overflows
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def preference_probability(margin_mean: ArrayLike, margin_var: ArrayLike | None = None) -> np.ndarray:
    """P(chosen > rejected) = E[sigmoid(f)], f ~ N(mu, s^2), by the probit approximation
    sigmoid(mu / sqrt(1 + pi s^2 / 8)) (MacKay 1992; DESIGN.md section 3). ``margin_var=None`` means s^2 = 0."""
    mu = as_float64(margin_mean, "margin_mean")
    if margin_var is None:
        return sigmoid(mu)
    var = as_float64(margin_var, "margin_var")
    if var.shape != mu.shape:
        raise ValueError(f"margin_var has shape {var.shape}, margin_mean {mu.shape}")
    return sigmoid(mu / np.sqrt(1.0 + math.pi * np.clip(var, 0.0, None) / 8.0))


def _probabilities(p: ArrayLike) -> np.ndarray:
    p = as_float64(p, "probabilities")
    if not np.all((p >= 0) & (p <= 1)):  # also rejects NaN
        raise ValueError("probabilities must lie in [0, 1]")
    return p


def accuracy(margins: ArrayLike) -> float:
    """Fraction of pairs ranked correctly, mean(1[f > 0] + 0.5 * 1[f == 0]) (a tie is a coin flip)."""
    f = as_float64(margins, "margins")
    return float(np.mean((f > 0) + 0.5 * (f == 0)))


def bt_nll(probabilities: ArrayLike) -> float:
    """Bradley-Terry negative log-likelihood of the observed preferences, -mean log p
    (p clipped at the smallest positive float64 so that a certain mistake costs ~708, not inf)."""
    p = _probabilities(probabilities)
    return float(-np.mean(np.log(np.clip(p, np.finfo(np.float64).tiny, None))))


def brier_score(probabilities: ArrayLike) -> float:
    """Brier score with label 1 = chosen: mean (1 - p)^2."""
    p = _probabilities(probabilities)
    return float(np.mean((1.0 - p) ** 2))


@dataclass(frozen=True)
class CalibrationBins:
    """Per-bin statistics of top-label confidence (arrays of length n_bins; empty bins have count 0
    and NaN accuracy / confidence)."""

    edges: np.ndarray       # [n_bins + 1] from 0 to 1
    counts: np.ndarray      # [n_bins]
    accuracy: np.ndarray    # [n_bins] fraction of correct predictions
    confidence: np.ndarray  # [n_bins] mean confidence

    def ece(self) -> float:
        """sum_m |B_m| / n * |acc(B_m) - conf(B_m)|."""
        used = self.counts > 0
        gap = np.abs(self.accuracy[used] - self.confidence[used])
        return float(np.sum(self.counts[used] * gap) / np.sum(self.counts))

    def mce(self) -> float:
        """Maximum calibration error, max over non-empty bins of |acc(B_m) - conf(B_m)|."""
        used = self.counts > 0
        return float(np.max(np.abs(self.accuracy[used] - self.confidence[used])))


def calibration_bins(probabilities: ArrayLike, n_bins: int = N_BINS) -> CalibrationBins:
    """Bin pairs by confidence c = max(p, 1 - p) into ``n_bins`` equal-width bins of [0, 1]
    (bin m holds m/M < c <= (m+1)/M, c = 0 in the first), the usual top-label binning of Guo et al.
    (2017); since c >= 0.5 only the upper half of the bins is used. A prediction is correct when
    p > 0.5 (the model ranks the chosen response higher; p = 0.5 counts as wrong)."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    p = _probabilities(probabilities)
    return _bin(np.maximum(p, 1.0 - p), (p > 0.5).astype(np.float64), n_bins)


def _bin(conf: np.ndarray, outcome: np.ndarray, n_bins: int) -> CalibrationBins:
    """Equal-width bins m/M < conf <= (m+1)/M: counts, mean outcome and mean confidence per bin."""
    idx = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_outcome = np.bincount(idx, weights=outcome, minlength=n_bins) / counts
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / counts
    return CalibrationBins(np.linspace(0.0, 1.0, n_bins + 1), counts.astype(np.int64), mean_outcome, mean_conf)


def calibration_bins_p_chosen(probabilities: ArrayLike, n_bins: int = N_BINS) -> CalibrationBins:
    """The P(chosen) convention: bin q = P(first response wins) over all of [0, 1], observed
    frequency of "first wins" per bin. Each pair enters in both orientations, (q = p, first wins)
    and (q = 1 - p, first loses), so the result does not depend on which response a file lists
    first and every bin can be used; ``accuracy`` holds the observed frequency. Bins as in
    :func:`calibration_bins` (m/M < q <= (m+1)/M). Each upper bin then mirrors a lower one with the
    same gap, so with an even number of bins this gives the top-label ECE (up to probabilities lying
    exactly on a bin edge); with an odd number (15) the two differ through the central bin, which
    straddles q = 0.5 here (gap ~0) and is cut to (0.5, 8/15] in the top-label convention."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be positive, got {n_bins}")
    p = _probabilities(probabilities)
    q = np.concatenate([p, 1.0 - p])  # [2N]
    y = np.concatenate([np.ones_like(p), np.zeros_like(p)])  # [2N] first response wins
    return _bin(q, y, n_bins)


def ece(probabilities: ArrayLike, n_bins: int = N_BINS) -> float:
    """Expected calibration error (Naeini et al. 2015) over top-label confidence bins
    (see :func:`calibration_bins` for the binning and what counts as correct)."""
    return calibration_bins(probabilities, n_bins).ece()


def ece_uprlhf(margins: ArrayLike, n_bins: int = N_BINS, max_confidence: float = 0.99) -> float:
    """UP-RLHF's ECE (arXiv:2401.00243, eq. 18-19): reward differences are rescaled so that the
    largest |f| in the set gets confidence ``max_confidence``, p = sigmoid(s f) with
    s = logit(0.99) / max|f|, which removes the reward scale; then :func:`ece`."""
    f = as_float64(margins, "margins")
    largest = float(np.max(np.abs(f)))
    scale = math.log(max_confidence / (1.0 - max_confidence)) / largest if largest > 0 else 0.0
    return ece(sigmoid(scale * f), n_bins)


def rankdata(x: ArrayLike) -> np.ndarray:
    """1-based ranks of x, tied values sharing the average of their ranks."""
    x = as_float64(x)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])  # first index of each tie group
    ends = np.r_[starts[1:], x.size]
    avg = (starts + ends + 1) / 2.0  # mean of ranks starts+1 .. ends
    ranks = np.empty(x.size)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve of ``scores`` for telling label 1 (e.g. shifted inputs) from label 0
    (in-distribution), via the Mann-Whitney U statistic: P(s_1 > s_0) + 0.5 P(s_1 = s_0)
    = (sum of the positives' average ranks - n1 (n1 + 1) / 2) / (n1 n0)."""
    s = as_float64(scores, "scores")
    y = as_float64(labels, "labels")
    if s.shape != y.shape:
        raise ValueError(f"scores has shape {s.shape}, labels {y.shape}")
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1")
    n1 = int(y.sum())
    n0 = y.size - n1
    if n1 == 0 or n0 == 0:
        raise ValueError("AUROC needs both labels (0 and 1) to be present")
    ranks = rankdata(s)
    return float((ranks[y == 1].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson correlation; NaN when either input is constant."""
    a, b = as_float64(x, "x"), as_float64(y, "y")
    if a.shape != b.shape:
        raise ValueError(f"x has shape {a.shape}, y {b.shape}")
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(np.dot(a, a)) * float(np.dot(b, b)))
    return float(np.dot(a, b) / denom) if denom > 0 else float("nan")


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman rank correlation (Pearson correlation of average ranks); NaN when either is constant."""
    return pearson(rankdata(x), rankdata(y))
