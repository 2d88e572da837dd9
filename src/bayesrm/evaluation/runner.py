"""Evaluate several scorers on several sets in one run: JSON, markdown tables, PNGs, an HTML page.

``evaluate_many(scorers, sets, out_dir)`` writes into ``out_dir``:

- ``results.json``: every metric of every (model, set), suite scores, shift AUROCs;
- ``results.md``: the tables (pairwise metrics; ensembles' member-averaged p; suites; shift);
- ``reliability_<model>_<set>.png`` (top-label and P(chosen) panels), ``coverage_<set>.png``
  (accuracy against coverage, abstaining by std / |margin| / both, one line per model);
- ``report.html``: one page with the tables and every PNG embedded (see :mod:`.html_report`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from bayesrm.data.schema import PreferencePair
from bayesrm.evaluation import uncertainty as U
from bayesrm.evaluation.calibration import coverage_plot, reliability_diagram
from bayesrm.evaluation.evaluate import evaluate_preferences
from bayesrm.evaluation.suites import Suite, rewardbench_scores, score_suite
from bayesrm.fileio import atomic_write_text
from bayesrm.types import Prompt, RewardScorer

PAIR_COLUMNS = ("n", "accuracy", "nll", "brier", "ece", "mce", "ece_p_chosen", "mce_p_chosen", "error_auroc",
                "acc@50_std", "acc@50_margin", "acc@50_both", "aucc_std", "aucc_margin", "aucc_both")
"""Columns of the pairwise table (see :func:`bayesrm.evaluation.evaluate.evaluate_preferences`)."""
MEMBER_COLUMNS = ("nll", "nll_members", "brier", "brier_members", "ece", "ece_members", "mce", "mce_members")
"""Columns of the ensemble table: probit of mean / variance (default) beside the member-averaged p."""


@dataclass
class EvalSet:
    """A named set to evaluate: plain preference pairs, or a suite (RewardBench v1 / v2, RM-Bench)."""

    name: str
    pairs: list[PreferencePair] | None = None
    suite: Suite | None = None


@dataclass
class ShiftSet:
    """Responses for the shift AUROC: in-distribution and shifted (prompt, response) lists."""

    name: str
    in_prompts: list[Prompt]
    in_responses: list[str]
    shifted_prompts: list[Prompt]
    shifted_responses: list[str]


def slug(text: str) -> str:
    """A file-name-safe version of a model or set name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "x"


def evaluate_many(
    scorers: Mapping[str, RewardScorer],
    sets: Sequence[EvalSet],
    out_dir: str | Path,
    batch_size: int = 32,
    shift: ShiftSet | None = None,
    progress: bool = False,
    plots: bool = True,
) -> dict[str, Any]:
    """Every scorer on every set (and the shift AUROC); writes the files listed in the module doc
    and returns the content of ``results.json``."""
    if not scorers or not sets:
        raise ValueError("evaluate_many needs at least one scorer and one set")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict[str, Any]] = {m: {} for m in scorers}
    images: list[tuple[str, str]] = []
    for s in sets:
        curves: dict[str, dict[str, U.CoverageCurve]] = {}
        for model, scorer in scorers.items():
            entry: dict[str, Any] = {}
            pairs = s.pairs if s.suite is None else (s.suite.pairs() if s.suite.kind == "rewardbench" else None)
            if pairs:
                res = evaluate_preferences(scorer, pairs, batch_size=batch_size, progress=progress)
                entry["metrics"] = res.metrics
                curves[model] = res.coverage_curves()
                if plots:
                    name = f"reliability_{slug(model)}_{slug(s.name)}.png"
                    reliability_diagram(res.probabilities, out / name, title=f"{model} on {s.name}", both_conventions=True)
                    images.append((f"Reliability: {model} on {s.name}", name))
                if s.suite is not None:  # RewardBench v1: the suite score from the same margins (strict >)
                    subsets = [it.subset for it in s.suite.items]
                    entry["suite"] = {"suite": "rewardbench", **rewardbench_scores(subsets, res.margins.mean.tolist(), [0.0] * len(pairs))}
            elif s.suite is not None:
                entry["suite"] = score_suite(scorer, s.suite, batch_size=batch_size, progress=progress)
            results[model][s.name] = entry
        if curves and plots:
            name = f"coverage_{slug(s.name)}.png"
            coverage_plot(curves, out / name, title=f"Selective accuracy on {s.name}")
            images.append((f"Accuracy against coverage on {s.name}", name))
    shift_out = {m: shift_metrics(sc, shift, batch_size, progress) for m, sc in scorers.items()} if shift else {}
    data = {"models": list(scorers), "sets": [s.name for s in sets], "results": results,
            "shift": {"name": shift.name, **shift_out} if shift else None, "images": [rel for _, rel in images]}
    atomic_write_text(out / "results.json", json.dumps(data, indent=2))
    tables = markdown_tables(data)
    atomic_write_text(out / "results.md", "\n".join(tables) + "\n")
    from bayesrm.evaluation.html_report import write_html_report

    write_html_report(out / "report.html", data, images)
    return data


def shift_metrics(scorer: RewardScorer, shift: ShiftSet, batch_size: int, progress: bool) -> dict[str, float | None]:
    """AUROC of the response std for shifted vs in-distribution responses, and the mean stds."""
    std_in = scorer.score(shift.in_prompts, shift.in_responses, batch_size=batch_size, progress=progress).std
    std_out = scorer.score(shift.shifted_prompts, shift.shifted_responses, batch_size=batch_size, progress=progress).std
    return {"shift_auroc": U.shift_auroc(std_in, std_out), "mean_std_in": float(std_in.double().mean()),
            "mean_std_shifted": float(std_out.double().mean()), "n_in": len(std_in), "n_shifted": len(std_out)}


def fmt(x: Any) -> str:
    if x is None:
        return "-"
    if isinstance(x, bool) or isinstance(x, int):
        return str(x)
    if isinstance(x, float):
        return f"{x:.3f}"
    return str(x)


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(fmt(v).replace("|", "\\|") for v in row) + " |" for row in rows]


def table_rows(data: Mapping[str, Any]) -> dict[str, tuple[list[str], list[list[Any]]]]:
    """The report's tables as (header, rows), by title; shared by the markdown and HTML writers."""
    res = data["results"]
    tables: dict[str, tuple[list[str], list[list[Any]]]] = {}
    pair_rows, member_rows, suite_rows = [], [], []
    for s in data["sets"]:
        for m in data["models"]:
            e = res[m].get(s, {})
            met = e.get("metrics")
            if met:
                pair_rows.append([m, s] + [met.get(c) for c in PAIR_COLUMNS])
                if "nll_members" in met:
                    member_rows.append([m, s] + [met.get(c) for c in MEMBER_COLUMNS])
            su = e.get("suite")
            if su:
                parts = {**su.get("sections", {}), **{k: su[k] for k in ("hard", "normal", "easy") if k in su}}
                if su["suite"] == "rewardbench2":
                    parts = su["subsets"]
                detail = ", ".join(f"{k} {v:.3f}" for k, v in parts.items())
                suite_rows.append([m, s, su["suite"], su["n"], su["score"], detail])
    if pair_rows:
        tables["Pairwise accuracy, calibration and uncertainty quality"] = (["model", "set", *PAIR_COLUMNS], pair_rows)
    if member_rows:
        tables["Ensembles: probit of mean / variance (default) vs member-averaged p"] = (["model", "set", *MEMBER_COLUMNS], member_rows)
    if suite_rows:
        tables["Suites"] = (["model", "set", "suite", "n", "score", "sections / subsets / style accuracy"], suite_rows)
    shift = data.get("shift")
    if shift:
        rows = [[m, shift[m]["shift_auroc"], shift[m]["mean_std_in"], shift[m]["mean_std_shifted"], shift[m]["n_in"], shift[m]["n_shifted"]]
                for m in data["models"]]
        tables[f"Shift: AUROC of the response std, {shift['name']}"] = (
            ["model", "shift_auroc", "mean_std_in", "mean_std_shifted", "n_in", "n_shifted"], rows)
    return tables


def markdown_tables(data: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    for title, (header, rows) in table_rows(data).items():
        lines += [f"### {title}", "", *_table(header, rows), ""]
    return lines
