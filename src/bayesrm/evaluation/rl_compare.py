"""Compare RL runs of several methods (several seeds each): gold and proxy reward against KL.

A method is a list of run directories (one per seed), each with the ``log.jsonl`` that
:class:`~bayesrm.alignment.rl.RLTrainer` writes. Per-step means over one rollout batch are noisy,
so curves are smoothed with a trailing moving average over ``window`` steps, and the table compares
methods at *equal KL*: every step of every seed is put in a KL bin (edges shared by all methods)
and gold / proxy are averaged within the bin (Gao et al. 2023 read over-optimisation off gold
against KL, not against steps).

``write_comparison(runs, out_dir)`` writes ``rl_comparison.png``, ``rl_comparison.md`` and
``rl_comparison.json``; ``bayesrm report --rl NAME=DIR[,DIR...] ...`` calls it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from bayesrm.alignment.rl.tracking import JsonlLog, is_finite_number
from bayesrm.fileio import atomic_write_text

KL_KEY = "kl_k3"


@dataclass
class MethodSummary:
    """One method pooled over its seeds; ``start``/``end`` are means of the first/last ``window`` steps."""

    method: str
    seeds: int
    steps: int
    kl_end: float | None
    gold_start: float | None
    """None (and the other gold fields) when no log of the method has a gold reward."""
    gold_end: float | None
    proxy_start: float | None
    proxy_end: float | None
    best_gold: float | None
    """Highest smoothed gold of any seed's curve (the early-stopping optimum a gold oracle would pick)."""
    gold_by_bin: list[float | None]
    """Mean gold of all steps (all seeds) whose KL falls in each bin; None where no step with a gold reward did."""
    proxy_by_bin: list[float | None]
    n_by_bin: list[int]


def load_runs(runs: Mapping[str, Sequence[str | Path]]) -> dict[str, list[list[dict[str, Any]]]]:
    """{method: [run_dir, ...]} -> {method: [records of each run]}; refuses missing or empty logs."""
    out: dict[str, list[list[dict[str, Any]]]] = {}
    for method, dirs in runs.items():
        if not dirs:
            raise ValueError(f"method {method!r}: no run directories given")
        out[method] = []
        for d in dirs:
            path = Path(d) / "log.jsonl"
            if not path.is_file():
                raise FileNotFoundError(f"{path}: no RL log (is {d} a `bayesrm rl --out` directory?)")
            records = sorted(JsonlLog(path).read(), key=lambda r: r.get("step", 0))
            if not records:
                raise ValueError(f"{path}: empty log")
            if not any(is_finite_number(r.get(KL_KEY)) for r in records):
                raise ValueError(f"{path}: no step logs a finite {KL_KEY!r}; is this a `bayesrm rl` log?")
            out[method].append(records)
    return out


def logs_without_gold(runs: Mapping[str, Sequence[str | Path]], all_runs: Mapping[str, list[list[dict[str, Any]]]]) -> list[str]:
    """Paths of the logs in which no step has a finite gold reward."""
    return [
        str(Path(d) / "log.jsonl")
        for method, dirs in runs.items()
        for d, records in zip(dirs, all_runs[method])
        if not any(is_finite_number(r.get("gold")) for r in records)
    ]


def moving_average(values: Sequence[float | None], window: int) -> list[float]:
    """Trailing mean over the last ``window`` finite values (NaN until one is seen)."""
    out, seen = [], []
    for v in values:
        if is_finite_number(v):
            seen.append(float(v))
        tail = seen[-window:]
        out.append(sum(tail) / len(tail) if tail else math.nan)
    return out


def kl_bins(all_runs: Mapping[str, list[list[dict[str, Any]]]], n_bins: int, kl_key: str = KL_KEY) -> list[float]:
    """Equal-width bin edges from 0 to the largest KL that *every* method reached (so bins compare like with like)."""
    reach = [max(r[kl_key] for run in runs for r in run if is_finite_number(r.get(kl_key))) for runs in all_runs.values()]
    top = min(reach)
    return [top * i / n_bins for i in range(n_bins + 1)]


def summarise(
    method: str, runs: list[list[dict[str, Any]]], edges: Sequence[float], window: int = 5, kl_key: str = KL_KEY
) -> MethodSummary:
    """Start/end means, best smoothed gold and per-KL-bin means of one method's seeds."""

    def mean_of(key: str, part: slice) -> float | None:
        """Mean over seeds of each seed's mean over ``part``; None where no seed logged ``key`` there (e.g. no gold)."""
        vals = []
        for run in runs:
            xs = [r[key] for r in run[part] if is_finite_number(r.get(key))]
            if xs:
                vals.append(sum(xs) / len(xs))
        return sum(vals) / len(vals) if vals else None

    n = len(edges) - 1
    gold_sum, proxy_sum, count, gold_count = [0.0] * n, [0.0] * n, [0] * n, [0] * n
    for run in runs:
        for r in run:
            kl = r.get(kl_key)
            if not (is_finite_number(kl) and is_finite_number(r.get("proxy")) and edges[0] <= kl <= edges[-1]):
                continue
            b = min(int((kl - edges[0]) / (edges[-1] - edges[0] or 1.0) * n), n - 1)
            proxy_sum[b] += r["proxy"]
            count[b] += 1
            if is_finite_number(r.get("gold")):
                gold_sum[b] += r["gold"]
                gold_count[b] += 1
    smoothed = [g for run in runs for g in moving_average([r.get("gold") for r in run], window) if math.isfinite(g)]
    best = max(smoothed) if smoothed else None
    return MethodSummary(
        method=method,
        seeds=len(runs),
        steps=min(len(run) for run in runs),
        kl_end=mean_of(kl_key, slice(-window, None)),
        gold_start=mean_of("gold", slice(0, window)),
        gold_end=mean_of("gold", slice(-window, None)),
        proxy_start=mean_of("proxy", slice(0, window)),
        proxy_end=mean_of("proxy", slice(-window, None)),
        best_gold=best,
        gold_by_bin=[g / c if c else None for g, c in zip(gold_sum, gold_count)],
        proxy_by_bin=[p / c if c else None for p, c in zip(proxy_sum, count)],
        n_by_bin=count,
    )


def plot_comparison(
    all_runs: Mapping[str, list[list[dict[str, Any]]]], path: str | Path, window: int = 5, kl_key: str = KL_KEY
) -> Path:
    """Three panels: smoothed gold vs KL, proxy vs KL, and KL vs step; one colour per method, one line per seed."""
    from bayesrm.evaluation.plots import PALETTE, figure, save_figure

    fig, (ax_gold, ax_proxy, ax_kl) = figure(3, width=4.6)
    styles = ["-", "--", ":", "-."]
    for i, (method, runs) in enumerate(all_runs.items()):
        color = PALETTE[i % len(PALETTE)]
        for s, run in enumerate(runs):
            kl = moving_average([r.get(kl_key) for r in run], window)
            label = method if s == 0 else None
            style = styles[s % len(styles)]
            ax_gold.plot(kl, moving_average([r.get("gold") for r in run], window), style, color=color, label=label)
            ax_proxy.plot(kl, moving_average([r.get("proxy") for r in run], window), style, color=color, label=label)
            ax_kl.plot([r["step"] for r in run], [r.get(kl_key) for r in run], style, color=color, label=label, linewidth=1)
    for ax, title in ((ax_gold, "gold reward"), (ax_proxy, "proxy reward (mean)")):
        ax.set_xlabel(f"KL to reference ({kl_key}, nats)")
        ax.set_title(title)
    ax_kl.set_xlabel("step")
    ax_kl.set_title(f"KL ({kl_key})")
    for ax in (ax_gold, ax_proxy, ax_kl):
        ax.grid(alpha=0.3, linewidth=0.5)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(f"RL runs, {window}-step trailing means; line style = seed", fontsize=10)
    return save_figure(fig, path)


def comparison_table(summaries: Sequence[MethodSummary], edges: Sequence[float], digits: int = 3) -> list[str]:
    """Markdown: start/end/best per method, then gold (proxy) per KL bin."""
    def f(value: float | None) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    lines = [
        "| method | seeds | steps | KL at end | gold start -> end | proxy start -> end | best smoothed gold |",
        "|---|---:|---:|---:|---|---|---:|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.method} | {s.seeds} | {s.steps} | {f(s.kl_end)} | {f(s.gold_start)} -> {f(s.gold_end)} "
            f"| {f(s.proxy_start)} -> {f(s.proxy_end)} | {f(s.best_gold)} |"
        )
    bins = [f"{edges[i]:.3g}-{edges[i + 1]:.3g}" for i in range(len(edges) - 1)]
    lines += ["", "Gold (proxy) at equal KL: mean over all steps of all seeds whose KL falls in the bin [steps]", ""]
    lines += ["| method | " + " | ".join(f"KL {b}" for b in bins) + " |", "|---|" + "---|" * len(bins)]
    for s in summaries:
        cells = [
            "-" if c == 0 else f"{f(g)} ({f(p)}) [{c}]"
            for g, p, c in zip(s.gold_by_bin, s.proxy_by_bin, s.n_by_bin)
        ]
        lines.append(f"| {s.method} | " + " | ".join(cells) + " |")
    return lines


def write_comparison(
    runs: Mapping[str, Sequence[str | Path]], out_dir: str | Path, window: int = 5, n_bins: int = 4, kl_key: str = KL_KEY
) -> dict[str, Path]:
    """Load the runs, write rl_comparison.{png,md,json} into ``out_dir``; returns their paths."""
    all_runs = load_runs(runs)
    edges = kl_bins(all_runs, n_bins, kl_key)
    summaries = [summarise(m, r, edges, window, kl_key) for m, r in all_runs.items()]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_comparison(all_runs, out / "rl_comparison.png", window, kl_key)
    md = out / "rl_comparison.md"
    dirs = {m: [str(d) for d in ds] for m, ds in runs.items()}
    no_gold = logs_without_gold(runs, all_runs)
    text = ["# RL comparison", "", *comparison_table(summaries, edges), "", "![comparison](rl_comparison.png)", "",
            "Runs: " + "; ".join(f"{m}: {', '.join(ds)}" for m, ds in dirs.items()), ""]
    if no_gold:
        text += ["No gold reward (`gold: null`, or logged without a gold judge) in: " + ", ".join(no_gold)
                 + "; their gold columns are `-`.", ""]
    atomic_write_text(md, "\n".join(text))
    js = out / "rl_comparison.json"
    payload = {"logs_without_gold": no_gold, "kl_key": kl_key, "window": window, "edges": list(edges), "runs": dirs, "methods": [asdict(s) for s in summaries]}
    atomic_write_text(js, json.dumps(payload, indent=2))
    return {"plot": png, "report": md, "json": js}

