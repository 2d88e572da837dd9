"""Reliability diagrams and accuracy-coverage curves (PNGs on a matplotlib Agg canvas; pyplot and
the global backend are left untouched)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from bayesrm.evaluation.metrics import N_BINS, ArrayLike, CalibrationBins, calibration_bins, calibration_bins_p_chosen
from bayesrm.evaluation.plots import save_figure
from bayesrm.evaluation.uncertainty import CoverageCurve

PALETTE = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3", "#8c8c8c")


def _figure(ncols: int, width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _reliability_panel(ax, bins: CalibrationBins, lo: float, xlabel: str, ylabel: str, title: str) -> None:
    used = bins.counts > 0
    width = float(bins.edges[1] - bins.edges[0])
    centers = bins.edges[:-1] + width / 2
    ax.bar(centers[used], bins.accuracy[used], width=width, edgecolor="black", linewidth=0.6,
           color=PALETTE[0], label="observed")
    ax.bar(centers[used], bins.confidence[used] - bins.accuracy[used], bottom=bins.accuracy[used], width=width,
           color=PALETTE[1], alpha=0.35, edgecolor=PALETTE[1], hatch="//", label="gap to predicted")
    ax.plot([lo, 1.0], [lo, 1.0], "k--", linewidth=1.0, label="perfect calibration")
    ax.plot(bins.confidence[used], bins.accuracy[used], "o", color="black", markersize=3)
    for x, n in zip(centers[used], bins.counts[used]):
        ax.text(x, 0.015, f"{n}", ha="center", va="bottom", fontsize=6, color="white", fontweight="bold")
    ax.set(xlim=(lo, 1.0), ylim=(0.0, 1.08), xlabel=xlabel, ylabel=ylabel,
           title=f"{title}\nECE = {bins.ece():.3f}, MCE = {bins.mce():.3f}")
    ax.grid(alpha=0.3, linewidth=0.5)
    ax.legend(loc="upper left", fontsize=7)


def reliability_diagram(
    probabilities: ArrayLike,
    path: str | Path,
    title: str = "Reliability diagram",
    n_bins: int = N_BINS,
    both_conventions: bool = False,
) -> Path:
    """Save a PNG: accuracy against mean confidence per top-label confidence bin (the bins of
    :func:`bayesrm.evaluation.metrics.calibration_bins`; only the upper half of [0, 1] is used), the
    diagonal of perfect calibration, the gap to it, and the number of pairs in each bin. With
    ``both_conventions``, a second panel shows the P(chosen) bins over all of [0, 1]
    (:func:`~bayesrm.evaluation.metrics.calibration_bins_p_chosen`; counts are pairs x 2). Returns the path."""
    fig, axes = _figure(2 if both_conventions else 1, 5.0, 4.8)
    top = calibration_bins(probabilities, n_bins)
    lo = 0.5 - 1.0 / n_bins if n_bins > 1 else 0.0  # confidence never goes below 0.5
    n = int(top.counts.sum())
    _reliability_panel(axes[0], top, lo, "confidence  max(p, 1 - p)", "accuracy  (p > 0.5)",
                       f"{title}: top-label, n = {n}")
    if both_conventions:
        _reliability_panel(axes[1], calibration_bins_p_chosen(probabilities, n_bins), 0.0,
                           "P(first response wins)", "observed frequency", "P(chosen), both orientations")
    return save_figure(fig, path)


def coverage_plot(curves: Mapping[str, Mapping[str, CoverageCurve]], path: str | Path, title: str = "Selective accuracy") -> Path:
    """Save a PNG: one panel per abstention rule (std, |margin|, both), accuracy against coverage,
    one line per model. ``curves[model][rule]`` as from :func:`~bayesrm.evaluation.uncertainty.coverage_curves`."""
    if not curves:
        raise ValueError("no coverage curves to plot")
    rules = list(next(iter(curves.values())))
    fig, axes = _figure(len(rules), 4.2, 3.8)
    labels = {"std": "abstain by std (keep lowest)", "margin": "abstain by |margin| (keep largest)",
              "both": "abstain by |mu| / sqrt(1 + pi var / 8)"}
    for ax, rule in zip(axes, rules):
        for i, (model, by_rule) in enumerate(curves.items()):
            c = by_rule[rule]
            ax.plot(c.coverage, c.accuracy, color=PALETTE[i % len(PALETTE)], linewidth=1.4,
                    label=f"{model} (area {c.area():.3f})")
        ax.set(xlim=(0, 1), xlabel="coverage (fraction of pairs kept)", ylabel="accuracy on kept pairs",
               title=labels.get(rule, rule))
        ax.axhline(0.5, color="grey", linewidth=0.7, linestyle=":")
        ax.grid(alpha=0.3, linewidth=0.5)
        ax.legend(fontsize=7, loc="lower left")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
