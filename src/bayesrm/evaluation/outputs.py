"""Evaluation written to disk: metrics.json and reliability.png for a scorer on preference pairs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from bayesrm.data.schema import PreferencePair
from bayesrm.fileio import atomic_write_text

METRIC_KEYS = ("n", "accuracy", "nll", "brier", "ece", "ece_uprlhf")
"""The metrics a one-line summary shows, in order."""


def write_evaluation(
    scorer: Any, pairs: Sequence[PreferencePair], out_dir: str | Path, batch_size: int, title: str, progress: bool = True
) -> dict[str, float]:
    """Evaluate on pairs; write metrics.json and reliability.png into out_dir; return the metrics."""
    from bayesrm.evaluation.calibration import reliability_diagram
    from bayesrm.evaluation.evaluate import evaluate_preferences

    result = evaluate_preferences(scorer, list(pairs), batch_size=batch_size, progress=progress)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "metrics.json", json.dumps(result.metrics, indent=2))
    reliability_diagram(result.probabilities, out_dir / "reliability.png", title=title)
    return result.metrics


def format_metrics(metrics: dict[str, float]) -> str:
    """``n=12  accuracy=0.9  ...`` for the console."""
    return "  ".join(
        f"{k}={metrics[k]:.4g}" if isinstance(metrics.get(k), float) else f"{k}={metrics.get(k)}" for k in METRIC_KEYS if k in metrics
    )
