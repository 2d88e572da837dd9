"""Overoptimization plots: best-of-n statistics against KL(BoN_n || policy) (Gao et al. 2023, Fig. 1 style).

PNG files on a matplotlib Agg canvas; pyplot and the global backend are left untouched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from bayesrm.alignment.bon import GOLD, PROXY, BoNCurve, kl_bon

# colour-blind-safe palette (Okabe-Ito), one colour per method
PALETTE = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]


def figure(ncols: int, width: float = 5.2, height: float = 4.3):
    """(figure, [ncols] axes) on an Agg canvas, one row; save with ``fig.savefig(path)``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), dpi=130)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


def _n_axis(ax, curves: Sequence[BoNCurve]) -> None:
    """Top axis labelled with n at KL(n), thinned so that neighbouring labels do not collide."""
    ns = sorted({n for c in curves for n in c.ns})
    kl = [float(kl_bon(n)) for n in ns]
    span = (kl[-1] - kl[0]) or 1.0
    shown: list[tuple[int, float]] = []
    for n, k in zip(ns, kl):
        if not shown or k - shown[-1][1] >= 0.045 * span:
            shown.append((n, k))
    top = ax.secondary_xaxis("top")
    labels = [f"n={n}" if i == 0 else str(n) for i, (n, _) in enumerate(shown)]
    top.set_xticks([k for _, k in shown], labels=labels, fontsize=7)


def _band_line(ax, curve: BoNCurve, stat: str, color: str, style: str, label: str | None) -> None:
    band = curve.stats[stat]
    x = curve.kl.numpy()
    ax.fill_between(x, band.lo.numpy(), band.hi.numpy(), color=color, alpha=0.15, linewidth=0)
    ax.plot(x, band.mean.numpy(), style, color=color, linewidth=1.6, marker="o", markersize=2.5, label=label)


def _finish(fig, ax_list, path: str | Path, title: str) -> Path:
    for ax in ax_list:
        ax.grid(alpha=0.3, linewidth=0.5)
        ax.set_xlabel("KL(best-of-n || policy) = log n - (n-1)/n  [nats]")
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Lay ``fig`` out tightly and write it to ``path`` (parent folders made); returns the path."""
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


def _check(curves: Mapping[str, BoNCurve], stat: str) -> None:
    if not curves:
        raise ValueError("no curves to plot")
    missing = [name for name, c in curves.items() if stat not in c.stats]
    if missing:
        raise ValueError(f"curves {missing} have no statistic '{stat}'")


def plot_bon(
    curves: Mapping[str, BoNCurve], path: str | Path, title: str = "Best-of-n overoptimization"
) -> Path:
    """Gold reward (solid, left) and proxy reward (dashed, right) of the best-of-n pick against KL.

    One colour per method; shaded areas are the bootstrap bands over prompts. Returns the path.
    """
    _check(curves, GOLD)
    _check(curves, PROXY)
    fig, (ax_gold, ax_proxy) = figure(2)
    for i, (name, curve) in enumerate(curves.items()):
        color = PALETTE[i % len(PALETTE)]
        _band_line(ax_gold, curve, GOLD, color, "-", name)
        _band_line(ax_proxy, curve, PROXY, color, "--", name)
    first = next(iter(curves.values()))
    ax_gold.set_ylabel("gold reward of the pick")
    ax_gold.set_title(f"gold (solid), {first.n_prompts} prompts x {first.n_samples} samples", fontsize=9)
    ax_proxy.set_ylabel("proxy reward of the pick")
    ax_proxy.set_title("proxy (dashed), each method's own proxy", fontsize=9)
    for ax in (ax_gold, ax_proxy):
        _n_axis(ax, list(curves.values()))
    ax_gold.legend(fontsize=8, loc="best", title="selected by", title_fontsize=8)
    return _finish(fig, (ax_gold, ax_proxy), path, title)


def plot_stat(
    curves: Mapping[str, BoNCurve],
    path: str | Path,
    stat: str = "sigma",
    ylabel: str = "uncertainty sigma of the pick",
    title: str = "Uncertainty of the best-of-n pick",
) -> Path:
    """One statistic of the pick (default the reward model's sigma) against KL, for the curves that have it."""
    have = {name: c for name, c in curves.items() if stat in c.stats}
    if not have:
        raise ValueError(f"no curve has the statistic '{stat}' (curves: {sorted(curves)})")
    fig, (ax,) = figure(1, width=6.0)
    for i, (name, curve) in enumerate(curves.items()):
        if name in have:
            _band_line(ax, curve, stat, PALETTE[i % len(PALETTE)], "-", name)
    ax.set_ylabel(ylabel)
    _n_axis(ax, list(have.values()))
    ax.legend(fontsize=8, loc="best", title="selected by", title_fontsize=8)
    return _finish(fig, (ax,), path, title)


def plot_scaling_fits(curves: Mapping[str, BoNCurve], fits: Mapping[str, object], path: str | Path,
                      title: str = "Scaling-law fits") -> Path:
    """Gold gain over n = 1 (points, with bands) and each fitted R(d) = d (alpha - beta d) (line) against KL."""
    import numpy as np

    _check(curves, GOLD)
    fig, (ax,) = figure(1, width=6.5)
    for i, (name, curve) in enumerate(curves.items()):
        color = PALETTE[i % len(PALETTE)]
        band = curve.stats[GOLD]
        base = float(band.mean[0])
        x = curve.kl.numpy()
        ax.fill_between(x, band.lo.numpy() - base, band.hi.numpy() - base, color=color, alpha=0.10, linewidth=0)
        ax.plot(x, band.mean.numpy() - base, "o", color=color, markersize=3)
        fit = fits[name]
        grid = np.linspace(0.0, float(x[-1]), 100)
        ax.plot(grid, fit.predict(grid).numpy(), "-", color=color, linewidth=1.4,
                label=f"{name}: alpha {fit.alpha:.2f}, beta {fit.beta:.2f}")
    ax.axhline(0.0, color="grey", linewidth=0.6)
    ax.set_ylabel("gold(n) - gold(1)")
    _n_axis(ax, list(curves.values()))
    ax.legend(fontsize=7, loc="best")
    return _finish(fig, (ax,), path, title)
