"""Reliability diagram of predicted preference probabilities (PNG on a matplotlib Agg canvas;
pyplot and the global backend are left untouched)."""

from __future__ import annotations

from pathlib import Path

from bayesrm.evaluation.metrics import N_BINS, ArrayLike, calibration_bins


def reliability_diagram(
    probabilities: ArrayLike,
    path: str | Path,
    title: str = "Reliability diagram",
    n_bins: int = N_BINS,
) -> Path:
    """Save a PNG: accuracy against mean confidence per top-label confidence bin (the bins of
    :func:`bayesrm.evaluation.metrics.calibration_bins`), the diagonal of perfect calibration,
    the gap to it, and the number of pairs in each bin. Returns the path written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    bins = calibration_bins(probabilities, n_bins)
    used = bins.counts > 0
    lo = 0.5 - 1.0 / n_bins if n_bins > 1 else 0.0  # confidence never goes below 0.5
    width = 1.0 / n_bins
    centers = bins.edges[:-1] + width / 2

    fig = Figure(figsize=(5.5, 5.0), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.bar(centers[used], bins.accuracy[used], width=width, edgecolor="black", linewidth=0.6,
           color="#4c72b0", label="accuracy")
    ax.bar(centers[used], bins.confidence[used] - bins.accuracy[used], bottom=bins.accuracy[used], width=width,
           color="#dd8452", alpha=0.35, edgecolor="#dd8452", hatch="//", label="gap to confidence")
    ax.plot([lo, 1.0], [lo, 1.0], "k--", linewidth=1.0, label="perfect calibration")
    ax.plot(bins.confidence[used], bins.accuracy[used], "o", color="black", markersize=3)
    for x, n in zip(centers[used], bins.counts[used]):
        ax.text(x, 0.015, f"{n}", ha="center", va="bottom", fontsize=7, color="white", fontweight="bold")
    n = int(bins.counts.sum())
    ax.set(xlim=(lo, 1.0), ylim=(0.0, 1.08), xlabel="confidence  max(p, 1 - p)", ylabel="accuracy  (p > 0.5)",
           title=f"{title}\nECE = {bins.ece():.3f}, n = {n} (in bars: pairs per bin)")
    ax.grid(alpha=0.3, linewidth=0.5)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
