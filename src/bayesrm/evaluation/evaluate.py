"""Score preference pairs with any reward scorer and compute accuracy and calibration metrics."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from bayesrm.data.schema import PreferencePair
from bayesrm.evaluation import metrics as M
from bayesrm.evaluation import uncertainty as U
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

    metrics:       see :func:`evaluate_preferences` (None where a metric is undefined).
    probabilities: [N] predictive P(chosen > rejected) (probit approximation when var_f > 0).
    margins:       the margin prediction f = r(chosen) - r(rejected).
    sources:       each pair's ``source`` (``file:line``).
    member_probabilities: [N] mean over members of sigmoid(f_k), for ensembles; else None.
    """

    metrics: dict[str, float | None]
    probabilities: np.ndarray
    margins: RewardPrediction
    sources: list[str] = field(default_factory=list)
    member_probabilities: np.ndarray | None = None

    def coverage_curves(self) -> dict[str, U.CoverageCurve]:
        """Accuracy-coverage curves abstaining by std, by |margin| and by both (see ``uncertainty``)."""
        return U.coverage_curves(self.margins.mean, self.margins.var)

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


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def probability_metrics(p: np.ndarray, suffix: str = "") -> dict[str, float | None]:
    """NLL, Brier, ECE and MCE (top-label and P(chosen) conventions) of predictive probabilities."""
    top, both = M.calibration_bins(p), M.calibration_bins_p_chosen(p)
    out = {"nll": M.bt_nll(p), "brier": M.brier_score(p), "ece": top.ece(), "mce": top.mce(),
           "ece_p_chosen": both.ece(), "mce_p_chosen": both.mce()}
    return {k + suffix: _finite(v) for k, v in out.items()}


def uncertainty_metrics(margins: RewardPrediction) -> dict[str, float | None]:
    """AUROC of the std for the pairs ranked wrongly; selective accuracy at :data:`U.COVERAGES`
    and the area under the accuracy-coverage curve, abstaining by std / |margin| / both."""
    out: dict[str, float | None] = {"error_auroc": _finite(U.error_auroc(margins.std, margins.mean))}
    for rule, curve in U.coverage_curves(margins.mean, margins.var).items():
        for c in U.COVERAGES:
            out[f"acc@{int(round(100 * c))}_{rule}"] = curve.at(c)
        out[f"aucc_{rule}"] = curve.area()
    return out


def evaluate_preferences(
    scorer: RewardScorer, pairs: Sequence[PreferencePair], batch_size: int = 32, progress: bool = False
) -> EvalResult:
    """Accuracy, Bradley-Terry NLL, Brier, ECE / MCE and uncertainty quality of ``scorer`` on ``pairs``
    (label: chosen wins).

    p = sigmoid(mu_f / sqrt(1 + pi var_f / 8)) is the predictive preference probability (the
    default everywhere); accuracy uses the sign of mu_f; ``ece_uprlhf`` rescales mu_f so the largest
    |mu_f| maps to 0.99. ``ece`` / ``mce`` use top-label bins, ``*_p_chosen`` the P(chosen) bins
    (:func:`metrics.calibration_bins_p_chosen`). For ensembles the same probability metrics are
    also given for the member-averaged p = mean_k sigmoid(f_k), with the suffix ``_members``.
    ``error_auroc``, ``acc@C_RULE`` and ``aucc_RULE``: see :func:`uncertainty_metrics`.
    """
    margins = pair_margins(scorer, pairs, batch_size=batch_size, progress=progress)
    p = M.preference_probability(margins.mean, margins.var)  # [N] float64
    metrics: dict[str, float | None] = {
        "n": len(pairs),
        "accuracy": M.accuracy(margins.mean),
        **probability_metrics(p),
        "ece_uprlhf": M.ece_uprlhf(margins.mean),
        "mean_margin": float(margins.mean.double().mean()),
        "mean_margin_std": float(margins.std.double().mean()),
        **uncertainty_metrics(margins),
    }
    p_members = None
    if margins.members is not None:
        p_members = U.member_probability(margins.members)  # [N]
        metrics.update(probability_metrics(p_members, "_members"))
    return EvalResult(metrics=metrics, probabilities=p, margins=margins, sources=[q.source for q in pairs],
                      member_probabilities=p_members)
