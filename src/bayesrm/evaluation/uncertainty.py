"""Uncertainty quality: does a scorer's std flag its own mistakes, and does abstaining help?

For any scorer's margin prediction f ~ (mu_f, var_f) on labelled pairs (chosen wins):

- :func:`error_auroc`: AUROC of the std for telling the pairs it ranks wrongly (mu_f <= 0) from
  those it ranks correctly; 0.5 = chance (a point model's std is 0 everywhere).
- :func:`accuracy_coverage`: accuracy on the fraction of pairs kept when abstaining on the least
  confident ones, for a confidence score; :data:`ABSTAIN_BY` names the three used by
  ``bayesrm eval``: low std, large |mu_f|, and both (the probit predictive's |mu_f| / sqrt(1 + pi var_f / 8),
  i.e. its confidence max(p, 1 - p)).
- :func:`member_probability`: the ensemble's member-averaged P(chosen) = mean_k sigmoid(f_k).
- :func:`sigma_gold_correlation`: correlation of sigma with |proxy - gold| (both z-scored), for
  scenarios where a gold reward is known.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

from bayesrm.evaluation.metrics import ArrayLike, as_float64, auroc, pearson, sigmoid, spearman


def correctness(margins: ArrayLike) -> np.ndarray:
    """[N] per-pair credit 1[f > 0] + 0.5 1[f == 0] (the convention of :func:`metrics.accuracy`)."""
    f = as_float64(margins, "margins")
    return (f > 0) + 0.5 * (f == 0)


def error_auroc(std: ArrayLike, margins: ArrayLike) -> float:
    """AUROC of ``std`` for the pairs ranked wrongly (mu_f <= 0, positives) against those ranked
    correctly; NaN when all pairs are right or all wrong."""
    s = as_float64(std, "std")
    wrong = (as_float64(margins, "margins") <= 0).astype(np.float64)
    if wrong.min() == wrong.max():
        return float("nan")
    return auroc(s, wrong)


@dataclass(frozen=True)
class CoverageCurve:
    """Accuracy when keeping only the k most confident pairs, k = 1 .. N.

    coverage: [N] k / N.
    accuracy: [N] expected accuracy of the k kept pairs (ties in confidence broken uniformly at random).
    """

    coverage: np.ndarray
    accuracy: np.ndarray

    def at(self, coverage: float) -> float:
        """Accuracy at the smallest k with k / N >= coverage."""
        if not 0 < coverage <= 1:
            raise ValueError(f"coverage must lie in (0, 1], got {coverage}")
        k = int(np.searchsorted(self.coverage, coverage - 1e-12))
        return float(self.accuracy[min(k, len(self.accuracy) - 1)])

    def area(self) -> float:
        """Area under the accuracy-coverage curve, mean_k accuracy(k) (1 - AURC of Geifman et al.)."""
        return float(np.mean(self.accuracy))


def accuracy_coverage(correct: ArrayLike, confidence: ArrayLike) -> CoverageCurve:
    """The accuracy-coverage curve of abstaining on the least ``confidence``.

    Pairs with equal confidence are ordered uniformly at random, in expectation: within each tie
    group every pair counts with the group's mean credit, so the curve is exact for that rule.
    """
    c = as_float64(correct, "correct")
    s = as_float64(confidence, "confidence")
    if c.shape != s.shape:
        raise ValueError(f"correct has shape {c.shape}, confidence {s.shape}")
    order = np.argsort(-s, kind="stable")
    s_sorted, c_sorted = s[order], c[order]
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])  # first index of each tie group
    sizes = np.diff(np.r_[starts, s.size])
    group_sum = np.add.reduceat(c_sorted, starts)
    expected = np.repeat(group_sum / sizes, sizes)  # [N] each pair's credit, averaged over its tie group
    k = np.arange(1, s.size + 1)
    return CoverageCurve(coverage=k / s.size, accuracy=np.cumsum(expected) / k)


def _by_std(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return -np.sqrt(np.clip(var, 0.0, None))


def _by_margin(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return np.abs(mean)


def _by_both(mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    return np.abs(mean) / np.sqrt(1.0 + math.pi * np.clip(var, 0.0, None) / 8.0)


ABSTAIN_BY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "std": _by_std,        # keep the pairs with the lowest std
    "margin": _by_margin,  # keep the largest |mu_f|
    "both": _by_both,      # keep the largest |mu_f| / sqrt(1 + pi var_f / 8)
}
"""Confidence scores (higher = kept first) from the margin's mean and variance."""

COVERAGES = (0.5, 0.8)
"""Coverages at which ``bayesrm eval`` reports selective accuracy."""


def coverage_curves(margin_mean: ArrayLike, margin_var: ArrayLike) -> dict[str, CoverageCurve]:
    """One accuracy-coverage curve per :data:`ABSTAIN_BY` rule."""
    mu = as_float64(margin_mean, "margin_mean")
    var = as_float64(margin_var, "margin_var")
    credit = correctness(mu)
    return {name: accuracy_coverage(credit, rule(mu, var)) for name, rule in ABSTAIN_BY.items()}


def member_probability(members: ArrayLike) -> np.ndarray:
    """[N] mean over members of sigmoid(f_k), from member margins f [K, N]."""
    if hasattr(members, "detach"):
        members = members.detach().to("cpu").double().numpy()  # type: ignore[union-attr]
    f = np.asarray(members, dtype=np.float64)
    if f.ndim != 2 or f.size == 0:
        raise ValueError(f"member margins must have shape [K, N], got {f.shape}")
    return sigmoid(f).reshape(f.shape).mean(axis=0)


def _zscore(x: np.ndarray) -> np.ndarray:
    sd = x.std()
    return (x - x.mean()) / sd if sd > 0 else x - x.mean()


def sigma_gold_correlation(sigma: ArrayLike, proxy: ArrayLike, gold: ArrayLike) -> dict[str, float]:
    """Pearson and Spearman correlation of the proxy's sigma with its error |z(proxy) - z(gold)|,
    where z standardises over the given responses (proxy and gold rewards live on different scales).
    NaN when sigma (or the error) is constant, e.g. for a point model."""
    s, p, g = as_float64(sigma, "sigma"), as_float64(proxy, "proxy"), as_float64(gold, "gold")
    if not s.shape == p.shape == g.shape:
        raise ValueError(f"sigma, proxy and gold have shapes {s.shape}, {p.shape}, {g.shape}")
    err = np.abs(_zscore(p) - _zscore(g))
    return {"pearson": pearson(s, err), "spearman": spearman(s, err)}


def shift_auroc(std_in: ArrayLike, std_shifted: ArrayLike) -> float:
    """AUROC of the response std for shifted responses (label 1) against in-distribution ones."""
    a, b = as_float64(std_in, "std_in"), as_float64(std_shifted, "std_shifted")
    return auroc(np.concatenate([a, b]), np.concatenate([np.zeros(a.size), np.ones(b.size)]))
