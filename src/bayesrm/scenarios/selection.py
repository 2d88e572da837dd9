"""Report sections of a best-of-n study: the over-optimisation test, penalties chosen on held-out
prompts, and Gao et al.'s scaling-law fit.

- **Regime.** Does a proxy's gold curve peak and then fall? gold(n_peak) - gold(N) with a paired
  bootstrap band over prompts, n_peak read off the *penalty-selection* prompts (so the test on the
  best-of-n prompts is not biased by picking the maximum of a noisy curve), and, for reference, off
  the best-of-n prompts themselves.
- **Selection.** Each proxy's conservative reward (the penalty and its k; `mean` included) is the one
  with the highest gold at n = N on the selection prompts; on the best-of-n prompts we then report
  its gold at N and at the MAP's peak, with paired bands against the MAP proxy's `mean`.
- **Scaling law.** R(d) = d (alpha - beta d), d = sqrt(KL), fitted to every selected curve.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from bayesrm.alignment.bon import BoNCurve, bootstrap_band, paired_difference

Curves = dict[str, dict[str, BoNCurve]]  # proxy -> reward spec -> curve


def choose_rewards(select_curves: Curves) -> dict[str, str]:
    """proxy -> the reward spec with the highest mean gold at the largest n on the selection prompts."""
    return {proxy: max(curves, key=lambda s: float(curves[s].gold.mean[-1])) for proxy, curves in select_curves.items()}


def peak_drop(curve: BoNCurve, peak_index: int, n_boot: int, seed: int) -> tuple[float, float, float]:
    """gold(n at peak_index) - gold(N): (mean, lo, hi) with a bootstrap band over prompts."""
    per_prompt = curve.gold.per_prompt.double()  # [M, P]
    diff = (per_prompt[peak_index] - per_prompt[-1]).unsqueeze(0)  # [1, P]
    lo, hi = bootstrap_band(diff, n_boot=n_boot, seed=seed)
    return float(diff.mean()), float(lo[0]), float(hi[0])


def _fmt(mean: float, lo: float, hi: float) -> str:
    return f"{mean:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def study_sections(
    all_curves: Curves, select_curves: Curves | None, n_boot: int, seed: int, out: Path, baseline: str = "map"
) -> tuple[list[str], dict[str, Any]]:
    """Markdown lines and a JSON-able summary of the regime, selection and scaling-law sections."""
    from bayesrm.evaluation.plots import plot_scaling_fits
    from bayesrm.evaluation.scaling import scaling_table

    lines: list[str] = []
    summary: dict[str, Any] = {}
    ns = next(iter(next(iter(all_curves.values())).values())).ns
    # ---- regime
    lines += ["## Does the gold curve turn down? gold(n_peak) - gold(N), paired over prompts", "",
              f"n_peak: where that curve's mean gold peaks, on the penalty-selection prompts (unbiased test) and on "
              f"the best-of-n prompts themselves (biased upward: the maximum of a noisy curve). N = {ns[-1]}.", "",
              "| proxy / reward | n_peak (selection) | drop [95%] | n_peak (best-of-n) | drop [95%] |", "|---|---|---|---|---|"]
    regime: dict[str, Any] = {}
    for proxy, curves in all_curves.items():
        curve = curves["mean"]
        own = int(torch.argmax(curve.gold.mean))
        sel = int(torch.argmax(select_curves[proxy]["mean"].gold.mean)) if select_curves and proxy in select_curves else None
        d_own = peak_drop(curve, own, n_boot, seed)
        d_sel = peak_drop(curve, sel, n_boot, seed) if sel is not None else None
        regime[proxy] = {"n_peak_selection": ns[sel] if sel is not None else None, "drop_selection": d_sel,
                         "n_peak_bon": ns[own], "drop_bon": d_own}
        lines.append(f"| {proxy} / `mean` | {ns[sel] if sel is not None else '-'} | {_fmt(*d_sel) if d_sel else '-'} "
                     f"| {ns[own]} | {_fmt(*d_own)} |")
    lines.append("")
    summary["regime"] = regime
    # ---- selection
    chosen = choose_rewards(select_curves) if select_curves else {p: "mean" for p in all_curves}
    summary["chosen"] = chosen
    if baseline in all_curves:
        base = all_curves[baseline]["mean"]
        peak = int(torch.argmax(base.gold.mean))
        lines += [f"## Each proxy with its reward chosen on the selection prompts, vs `{baseline}` / `mean`", "",
                  f"Gold on the best-of-n prompts at N = {ns[-1]} and at the {baseline} proxy's peak n = {ns[peak]}; "
                  "differences are paired over prompts (95% bootstrap bands).", "",
                  f"| proxy | chosen reward | gold at n={ns[peak]} | vs {baseline} mean | gold at N={ns[-1]} | vs {baseline} mean |",
                  "|---|---|---|---|---|---|"]
        table = {}
        for proxy, spec in chosen.items():
            curve = all_curves[proxy].get(spec)
            if curve is None:
                continue
            diff = paired_difference(curve, base, n_boot=n_boot, seed=seed)
            g = curve.gold.mean
            row = {"reward": spec, "gold_peak": float(g[peak]), "gold_N": float(g[-1]),
                   "diff_peak": [float(diff.mean[peak]), float(diff.lo[peak]), float(diff.hi[peak])],
                   "diff_N": [float(diff.mean[-1]), float(diff.lo[-1]), float(diff.hi[-1])]}
            table[proxy] = row
            lines.append(f"| {proxy} | `{spec}` | {row['gold_peak']:.3f} | {_fmt(*row['diff_peak'])} | {row['gold_N']:.3f} "
                         f"| {_fmt(*row['diff_N'])} |")
        lines.append("")
        summary["selected"] = table
    # ---- scaling law
    fitted = {f"{p}/mean": all_curves[p]["mean"] for p in all_curves}
    fitted.update({f"{p}/{s}": all_curves[p][s] for p, s in chosen.items() if s != "mean" and s in all_curves[p]})
    table_lines, fits = scaling_table(fitted, n_boot=n_boot, seed=seed)
    plot_scaling_fits(fitted, fits, out / "scaling.png", title="gold gain over n=1 and the fitted R(d) = d (alpha - beta d)")
    lines += ["## Scaling-law fit (Gao et al.): gold(n) - gold(1) = d (alpha - beta d), d = sqrt(KL)", "",
              "Least squares on the mean curve; 95% intervals from a bootstrap over prompts; peak KL = (alpha / 2 beta)^2 "
              "('none': beta <= 0, no peak).", "", *table_lines, "", "![scaling-law fits](scaling.png)", ""]
    summary["scaling"] = {name: f.to_dict() for name, f in fits.items()}
    (out / "study.json").write_text(json.dumps(summary, indent=1))
    return lines, summary
