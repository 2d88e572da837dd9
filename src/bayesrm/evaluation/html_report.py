"""One self-contained HTML page for ``bayesrm eval``: the tables and every PNG embedded (base64)."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any, Mapping, Sequence

from bayesrm.evaluation.runner import fmt, table_rows
from bayesrm.fileio import atomic_write_text

STYLE = """
body { font-family: -apple-system, Segoe UI, Helvetica, Arial, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
table { border-collapse: collapse; font-size: 12px; margin-bottom: 8px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: right; }
th { background: #f0f0f0; } td:nth-child(1), td:nth-child(2) { text-align: left; }
figure { display: inline-block; margin: 6px; vertical-align: top; }
figcaption { font-size: 12px; color: #555; } img { max-width: 100%; border: 1px solid #eee; }
p.note { font-size: 12px; color: #444; max-width: 1000px; }
"""

NOTES = (
    "p = sigmoid(mu_f / sqrt(1 + pi var_f / 8)) (probit of the margin's mean and variance) is the default "
    "predictive probability; for ensembles the member-averaged p = mean_k sigmoid(f_k) is shown beside it. "
    "ece / mce: top-label bins of max(p, 1 - p) (15 equal-width bins of [0, 1]; confidence is at least 0.5, so "
    "only the upper half of the bins is used); *_p_chosen: bins of P(first wins) over [0, 1], every pair in both "
    "orientations. error_auroc: AUROC of the margin std for the pairs ranked wrongly (0.5 = chance). "
    "acc@50_RULE: accuracy on the half of the pairs kept when abstaining by RULE; aucc_RULE: area under the "
    "accuracy-coverage curve."
)


def _table_html(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(fmt(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def write_html_report(path: str | Path, data: Mapping[str, Any], images: Sequence[tuple[str, str]],
                      title: str = "bayesrm evaluation") -> Path:
    """Write the page; ``images`` are (caption, PNG path relative to the page's folder)."""
    path = Path(path)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
             f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p>Models: {html.escape(', '.join(data['models']))}. Sets: {html.escape(', '.join(data['sets']))}.</p>",
             f"<p class='note'>{html.escape(NOTES)}</p>"]
    for caption, (header, rows) in table_rows(data).items():
        parts += [f"<h2>{html.escape(caption)}</h2>", _table_html(header, rows)]
    if images:
        parts.append("<h2>Figures</h2>")
    for caption, rel in images:
        png = base64.b64encode((path.parent / rel).read_bytes()).decode("ascii")
        parts.append(f"<figure><img alt='{html.escape(caption)}' src='data:image/png;base64,{png}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(parts))
    return path
