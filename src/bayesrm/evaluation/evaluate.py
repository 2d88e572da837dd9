"""Score preference pairs with any reward scorer and compute accuracy and calibration metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from bayesrm.data.schema import PreferencePair
from bayesrm.evaluation import metrics as M
from bayesrm.types import RewardPrediction, RewardScorer


def pair_margins(
    scorer: RewardScorer, pairs: Sequence[PreferencePair], batch_size: int = 32, progress: bool = False
) -> RewardPrediction:
    """The predictive distribution of the margin f = r(chosen) - r(rejected), one entry per pair.

    - A scorer with ``score_pairs(prompts, chosen, rejected, batch_size, progress)`` computes it
      itself (Laplace: var_f = (J_w - J_l) Sigma (J_w - J_l)^T keeps the covariance of r_w and r_l).
    - Otherwise chosen and rejected are scored with ``score`` in one call. Ensembles (``members``
      [K, B]): f_k = r_k(chosen) - r_k(rejected), mean and population variance (ddof=0) over k.
      Point or other models: mean_w - mean_l and var_w + var_l (treats r_w and r_l as independent).
    """
    if not pairs:
        raise ValueError("no pairs to score")
    prompts = [p.prompt for p in pairs]
    chosen = [p.chosen for p in pairs]
    rejected = [p.rejected for p in pairs]
    n = len(pairs)
    score_pairs = getattr(scorer, "score_pairs", None)
    if callable(score_pairs):
        pred = score_pairs(prompts, chosen, rejected, batch_size=batch_size, progress=progress)
        _check_length(pred, n, "score_pairs")
        return pred
    pred = scorer.score(prompts + prompts, chosen + rejected, batch_size=batch_size, progress=progress)
    _check_length(pred, 2 * n, "score")
    if pred.members is not None:
        return RewardPrediction.from_members(pred.members[:, :n] - pred.members[:, n:])  # [K, n]
    return RewardPrediction(mean=pred.mean[:n] - pred.mean[n:], var=pred.var[:n] + pred.var[n:])


def _check_length(pred: RewardPrediction, expected: int, method: str) -> None:
    if len(pred) != expected:
        raise ValueError(f"scorer.{method} returned {len(pred)} predictions for {expected} inputs")


@dataclass
class EvalResult:
    """Metrics over a set of pairs, and the per-pair predictions behind them.

    metrics:       n, accuracy, nll, brier, ece, ece_uprlhf, mean_margin, mean_margin_std.
    probabilities: [N] predictive P(chosen > rejected) (probit approximation when var_f > 0).
    margins:       the margin prediction f = r(chosen) - r(rejected).
    sources:       each pair's ``source`` (``file:line``).
    """

    metrics: dict[str, float]
    probabilities: np.ndarray
    margins: RewardPrediction
    sources: list[str] = field(default_factory=list)

    def to_json(self, per_pair: bool = False, indent: int | None = 2) -> str:
        """The metrics as JSON; with ``per_pair``, also each pair's source, margin mean / variance and p."""
        out: dict[str, Any] = {"metrics": self.metrics}
        if per_pair:
            out["pairs"] = [
                {"source": s, "margin_mean": m, "margin_var": v, "probability": p}
                for s, m, v, p in zip(
                    self.sources, self.margins.mean.tolist(), self.margins.var.tolist(), self.probabilities.tolist()
                )
            ]
        return json.dumps(out, indent=indent)


def evaluate_preferences(
    scorer: RewardScorer, pairs: Sequence[PreferencePair], batch_size: int = 32, progress: bool = False
) -> EvalResult:
    """Accuracy, Bradley-Terry NLL, Brier and ECE of ``scorer`` on ``pairs`` (label: chosen wins).

    p = sigmoid(mu_f / sqrt(1 + pi var_f / 8)) is the predictive preference probability; accuracy
    uses the sign of mu_f; ``ece_uprlhf`` rescales mu_f so the largest |mu_f| maps to 0.99.
    """
    margins = pair_margins(scorer, pairs, batch_size=batch_size, progress=progress)
    p = M.preference_probability(margins.mean, margins.var)  # [N] float64
    metrics: dict[str, float] = {
        "n": len(pairs),
        "accuracy": M.accuracy(margins.mean),
        "nll": M.bt_nll(p),
        "brier": M.brier_score(p),
        "ece": M.ece(p),
        "ece_uprlhf": M.ece_uprlhf(margins.mean),
        "mean_margin": float(margins.mean.double().mean()),
        "mean_margin_std": float(margins.std.double().mean()),
    }
    return EvalResult(metrics=metrics, probabilities=p, margins=margins, sources=[q.source for q in pairs])
