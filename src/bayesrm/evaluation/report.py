"""Markdown overoptimization report for best-of-n: settings, seeds, timings, plots and tables.

``make_bon_report(out_dir, curves, ...)`` writes everything into one directory:
``bon.png`` (gold solid / proxy dashed against KL), ``uncertainty.png`` (when the curves carry
``sigma``), ``curves.json`` (every curve, per-prompt values included, so the report can be
rebuilt with :func:`load_curves`) and ``report.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from bayesrm.alignment.bon import GOLD, PROXY, BoNCurve, kl_bon, paired_difference
from bayesrm.evaluation.plots import plot_bon, plot_stat

SIGMA = "sigma"
HIGHER_IS_BETTER = (GOLD, "p_all")
"""Statistics whose best method per n is marked in bold."""


def _esc(text: str) -> str:
    """Escape a table cell (reward specs such as ``std:k=2|log_sigmoid`` contain pipes)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fmt_value(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    if isinstance(x, (dict, list, tuple)):
        return "`" + json.dumps(x, default=str) + "`"
    return str(x)


def _kv_table(rows: Mapping[str, Any], header: tuple[str, str] = ("setting", "value")) -> list[str]:
    out = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    out += [f"| {_esc(k)} | {_esc(_fmt_value(v))} |" for k, v in rows.items()]
    return out


def _timings_table(timings: Mapping[str, float]) -> list[str]:
    out = ["| step | seconds |", "|---|---:|"]
    out += [f"| {_esc(k)} | {v:.1f} |" for k, v in timings.items()]
    if len(timings) > 1:
        out.append(f"| **total** | **{sum(timings.values()):.1f}** |")
    return out


def stat_table(curves: Mapping[str, BoNCurve], stat: str, mark_best: bool = True, digits: int = 3) -> list[str]:
    """Markdown rows: one per n (with KL), one column per method, ``mean [lo, hi]``; best per n in bold."""
    names = [name for name, c in curves.items() if stat in c.stats]
    if not names:
        raise ValueError(f"no curve has the statistic '{stat}'")
    ns = sorted({n for name in names for n in curves[name].ns})
    out = ["| n | KL | " + " | ".join(map(_esc, names)) + " |", "|---:|---:|" + "---:|" * len(names)]
    for n in ns:
        cells: dict[str, tuple[float, str]] = {}
        for name in names:
            c = curves[name]
            if n in c.ns:
                m = c.ns.index(n)
                band = c.stats[stat]
                mean, lo, hi = (float(band.mean[m]), float(band.lo[m]), float(band.hi[m]))
                cells[name] = (mean, f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]")
        best = max(v for v, _ in cells.values())
        row = []
        for name in names:
            if name not in cells:
                row.append("-")
                continue
            value, text = cells[name]
            is_best = mark_best and len(cells) > 1 and value >= best - 1e-9 * max(1.0, abs(best))
            row.append(f"**{text}**" if is_best else text)
        out.append(f"| {n} | {kl_bon(n):.3f} | " + " | ".join(row) + " |")
    return out


def gain_table(curves: Mapping[str, BoNCurve], baseline: str, stat: str = GOLD, digits: int = 3) -> list[str]:
    """Markdown rows: per n, each method's ``stat`` minus the baseline's, paired bootstrap band;
    ``*`` where the band excludes 0."""
    if baseline not in curves:
        raise ValueError(f"baseline '{baseline}' is not one of the curves {sorted(curves)}")
    base = curves[baseline]
    others = [name for name in curves if name != baseline]
    meta = base.meta
    diffs = {
        name: paired_difference(
            curves[name], base, stat, int(meta.get("n_boot", 1000)), int(meta.get("seed", 0)), float(meta.get("level", 0.95))
        )
        for name in others
    }
    out = ["| n | KL | " + " | ".join(map(_esc, others)) + " |", "|---:|---:|" + "---:|" * len(others)]
    for m, n in enumerate(base.ns):
        cells = []
        for name in others:
            d = diffs[name]
            lo, hi = float(d.lo[m]), float(d.hi[m])
            tol = 1e-9 * max(1.0, abs(lo), abs(hi))  # n = 1 differs from 0 only by rounding
            star = "*" if lo > tol or hi < -tol else ""
            cells.append(f"{float(d.mean[m]):+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]{star}")
        out.append(f"| {n} | {kl_bon(n):.3f} | " + " | ".join(cells) + " |")
    return out


def write_bon_report(
    path: str | Path,
    curves: Mapping[str, BoNCurve],
    settings: Mapping[str, Any],
    timings: Mapping[str, float],
    extra_sections: Sequence[str] = (),
    *,
    seeds: Mapping[str, int] | None = None,
    images: Mapping[str, str] | None = None,
    baseline: str | None = None,
    title: str = "Best-of-n overoptimization report",
) -> Path:
    """Write the markdown report: settings, seeds, timings, plots, and per-statistic tables.

    The gold table (and ``p_all``, when present) marks the best method at each n in bold.
    ``images`` maps a caption to a path relative to the report. With ``baseline`` (a curve name),
    a table of each method's gold gain over it, with paired bootstrap bands, follows.
    ``extra_sections`` are appended verbatim (markdown strings).
    """
    if not curves:
        raise ValueError("write_bon_report needs at least one curve")
    first = next(iter(curves.values()))
    level = float(first.meta.get("level", 0.95))
    lines = [f"# {title}", ""]
    lines += [
        f"{len(curves)} selection methods, {first.n_prompts} prompts x {first.n_samples} samples per prompt. "
        f"Values are the unbiased best-of-n estimates (all C(N, n) subsets) averaged over prompts; "
        f"brackets are {level:.0%} percentile-bootstrap bands over prompts. "
        "KL(best-of-n || policy) = log n - (n - 1)/n.",
        "",
        "## Settings",
        "",
        *_kv_table(settings),
        "",
    ]
    if seeds:
        lines += ["## Seeds", "", *_kv_table(seeds, ("seed", "value")), ""]
    if timings:
        lines += ["## Timings", "", *_timings_table(timings), ""]
    for caption, rel in (images or {}).items():
        lines += [f"![{caption}]({rel})", ""]
    lines += ["## Gold reward of the pick", "", "Best method at each n in **bold**.", "", *stat_table(curves, GOLD), ""]
    if baseline is not None and len(curves) > 1:
        lines += [
            f"## Gold gain over `{baseline}`",
            "",
            "Per-prompt differences, paired bootstrap bands; `*` where the band excludes 0.",
            "",
            *gain_table(curves, baseline),
            "",
        ]
    lines += ["## Proxy reward of the pick", "", "Each method's own proxy (not comparable across methods).", ""]
    lines += [*stat_table(curves, PROXY, mark_best=False), ""]
    extras = sorted({s for c in curves.values() for s in c.stats} - {GOLD, PROXY})
    for stat in extras:
        lines += [f"## `{stat}` of the pick", "", *stat_table(curves, stat, mark_best=stat in HIGHER_IS_BETTER), ""]
    for section in extra_sections:
        lines += [section.rstrip(), ""]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))
    return path


def save_curves(path: str | Path, curves: Mapping[str, BoNCurve]) -> Path:
    """All curves as JSON (per-prompt values included)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({name: c.to_dict() for name, c in curves.items()}))
    return path


def load_curves(path: str | Path) -> dict[str, BoNCurve]:
    """Curves written by :func:`save_curves`."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise ValueError(f"{path}: cannot read the curves file ({err.strerror})") from None
    try:
        data = json.loads(raw)
        curves = {name: BoNCurve.from_dict(d) for name, d in data.items()}
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as err:
        raise ValueError(f"{path}: not a bayesrm best-of-n curves file ({type(err).__name__}: {err})") from None
    if not curves:
        raise ValueError(f"{path}: holds no curves")
    for name, curve in curves.items():
        lengths = {len(curve.ns), len(curve.kl)} | {len(band.mean) for band in curve.stats.values()}
        if not curve.ns or len(lengths) != 1 or GOLD not in curve.stats or PROXY not in curve.stats:
            raise ValueError(f"{path}: curve {name!r} needs non-empty ns, with kl and the {GOLD!r} and {PROXY!r} "
                             "statistics of the same length")
    return curves


def make_bon_report(
    out_dir: str | Path,
    curves: Mapping[str, BoNCurve],
    settings: Mapping[str, Any],
    timings: Mapping[str, float],
    extra_sections: Iterable[str] = (),
    *,
    seeds: Mapping[str, int] | None = None,
    baseline: str | None = None,
    title: str = "Best-of-n overoptimization report",
) -> dict[str, Path]:
    """Write bon.png, uncertainty.png (if any curve has ``sigma``), curves.json and report.md into ``out_dir``."""
    out = Path(out_dir)
    paths = {"bon_plot": plot_bon(curves, out / "bon.png", title=title), "curves": save_curves(out / "curves.json", curves)}
    images = {"gold and proxy reward against KL": "bon.png"}
    if any(SIGMA in c.stats for c in curves.values()):
        paths["uncertainty_plot"] = plot_stat(curves, out / "uncertainty.png", SIGMA)
        images["uncertainty of the pick against KL"] = "uncertainty.png"
    paths["report"] = write_bon_report(
        out / "report.md", curves, settings, timings, list(extra_sections), seeds=seeds, images=images,
        baseline=baseline, title=title,
    )
    return paths
