"""A scenario's top-level report, pooling over seeds, and the seed loop.

``run_scenario(config, out, seeds)`` runs :class:`~bayesrm.scenarios.bon.BoNRunner` once per seed
(into ``OUT/seed<S>`` when several are given; the sample cache is shared) and pools the seeds.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from bayesrm.config import to_mapping
from bayesrm.fileio import atomic_write_text
from bayesrm.scenarios.config import ScenarioConfig
from bayesrm.types import RewardPrediction


def scenario_settings(config: ScenarioConfig) -> dict[str, Any]:
    """The scenario as plain data for reports; of the training settings only those changed from their defaults."""
    settings = to_mapping(config)
    settings["training"] = to_mapping(config.training, changed_only=True)
    return settings


def proxy_report_settings(config: ScenarioConfig) -> dict[str, Any]:
    """The settings table of a per-proxy best-of-n report (``bon/<proxy>/report.md``), as display strings."""
    c = config
    return {"scenario": c.name, "policy": c.policy, "gold": c.gold, "sampling": json.dumps(to_mapping(c.sampling)),
            "preference prompts x samples": f"{c.preferences.prompts} x {c.preferences.samples_per_prompt}",
            "label temperature / noise": f"{c.preferences.label_temperature} / {c.preferences.label_noise}",
            "best-of-n prompts x N": f"{c.bon.prompts} x {c.bon.n_samples}", "reward model": json.dumps(to_mapping(c.model, changed_only=True)),
            "training": json.dumps(to_mapping(c.training, changed_only=True)), "proxies": ", ".join(f"{p.name} ({p.method})" for p in c.proxies),
            "seed": c.seed}


def sigma_gold_section(out: Path, preds: dict[str, RewardPrediction], gold: RewardPrediction) -> str:
    """Markdown: correlation of each proxy's sigma with its error |z(proxy) - z(gold)| on the best-of-n samples
    (also written to ``out/sigma_gold.json``)."""
    from bayesrm.evaluation.uncertainty import sigma_gold_correlation

    rows = {name: sigma_gold_correlation(pred.std, pred.mean, gold.mean) for name, pred in preds.items()}
    atomic_write_text(out / "sigma_gold.json", json.dumps(rows, indent=1))
    fmt = lambda x: "-" if x != x else f"{x:.3f}"  # noqa: E731 - NaN (point model) as '-'
    return "\n".join(["## Does sigma track the proxy's error?", "",
                      "Correlation of each proxy's sigma with |z(proxy) - z(gold)| over all best-of-n samples "
                      "(z: standardised over the samples; '-': sigma is constant, a point model).", "",
                      "| proxy | Pearson | Spearman |", "|---|---|---|",
                      *[f"| {n} | {fmt(r['pearson'])} | {fmt(r['spearman'])} |" for n, r in rows.items()], ""])


def run_scenario(
    config: ScenarioConfig,
    out: str | Path,
    seeds: Sequence[int] | None = None,
    progress: bool = True,
    cache_dir: str | Path | None = None,
    overwrite: bool = False,
) -> list[Path]:
    """Run the scenario for each seed (default: its own) and pool them; returns the report paths."""
    from bayesrm.scenarios.bon import BoNRunner

    out = Path(out)
    reports, seed_dirs = [], {}
    for seed in seeds or [config.seed]:
        target = out / f"seed{seed}" if seeds else out
        runner = BoNRunner(config.with_seed(seed), target, progress=progress, cache_dir=cache_dir or out / "samples",
                           overwrite=overwrite)
        reports.append(runner.run())
        seed_dirs[seed] = target
    if len(seed_dirs) > 1:
        reports.append(seeds_summary(out, config.with_seed(list(seed_dirs)[0]), seed_dirs))
    return reports


def write_summary(
    out: Path,
    config: ScenarioConfig,
    all_curves: dict[str, dict[str, Any]],
    proxy_metrics: dict[str, dict[str, float]],
    sections: list[str],
    timings: dict[str, float],
    runs_note: str = "",
    select_curves: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Top-level report: one overview plot (each proxy's mean and its penalty: the one chosen on the
    selection prompts when there are any, else the best at N, labelled as such), tables, links."""
    from bayesrm.alignment.bon import paired_difference
    from bayesrm.evaluation.plots import plot_bon
    from bayesrm.scenarios.selection import choose_rewards

    c = config
    flat = {f"{proxy}/{spec}": curve for proxy, curves in all_curves.items() for spec, curve in curves.items()}
    chosen = choose_rewards({p: cs for p, cs in select_curves.items() if p in all_curves}) if select_curves else {}
    overview = {}
    for proxy, curves in all_curves.items():
        overview[f"{proxy}/mean"] = curves["mean"]
        if proxy in chosen:
            if chosen[proxy] != "mean" and chosen[proxy] in curves:
                overview[f"{proxy}/{chosen[proxy]} (chosen on selection prompts)"] = curves[chosen[proxy]]
            continue
        best = max((s for s in curves if s != "mean"), key=lambda s: float(curves[s].stats["gold"].mean[-1]), default=None)
        if best is not None:
            overview[f"{proxy}/{best} (best at N)"] = curves[best]
    plot_bon(overview, out / "bon.png", title=f"{c.name}: gold (solid) and proxy (dashed) reward of best-of-n")
    ns = c.bon_ns()
    lines = [f"# {c.name}: best-of-n overoptimization", "",
             f"Policy `{c.policy}`, gold `{c.gold}`, {c.bon.prompts} prompts x N = {c.bon.n_samples} samples; "
             f"E[gold of best-of-n] by the unbiased estimator over all subsets, {int(100 * 0.95)}% bootstrap bands over prompts. "
             "Proxy rewards in z-units of each proxy." + (f" {runs_note}" if runs_note else ""), "", "![overview](bon.png)", ""]
    if proxy_metrics:
        lines += ["## Proxies on held-out gold-labelled pairs", "", "| proxy | accuracy | NLL | ECE |", "|---|---|---|---|"]
        lines += [f"| {n} | {m['accuracy']:.3f} | {m['nll']:.3f} | {m['ece']:.3f} |" for n, m in proxy_metrics.items()]
        lines.append("")
    lines += ["## Gold reward of the best-of-n pick", "", "| proxy / reward | " + " | ".join(f"n={n}" for n in ns) + " | peak n | gain over mean at n=" + str(ns[-1]) + " |",
              "|---" * (len(ns) + 3) + "|"]
    for proxy, curves in all_curves.items():
        for spec, curve in curves.items():
            g = curve.stats["gold"]
            peak = ns[int(torch.argmax(g.mean))]
            gain = paired_difference(curve, curves["mean"], n_boot=c.bon.n_boot, seed=c.seed)
            gain_txt = "" if spec == "mean" else f"{float(gain.mean[-1]):+.3f} [{float(gain.lo[-1]):+.3f}, {float(gain.hi[-1]):+.3f}]"
            lines.append(f"| {proxy} / `{spec}` | " + " | ".join(f"{float(v):.3f}" for v in g.mean) + f" | {peak} | {gain_txt} |")
    lines.append("")
    if (out / "bon").is_dir():
        lines += ["Per-proxy reports: " + ", ".join(f"[{p}](bon/{p}/report.md)" for p in all_curves), ""]
    lines += sections
    if select_curves is not None or c.bon.selection_prompts == 0:
        from bayesrm.scenarios.selection import study_sections

        baseline = next((p.name for p in c.proxies if p.method == "map" and p.name in all_curves), "map")
        lines += study_sections(all_curves, select_curves, c.bon.n_boot, c.seed, out, baseline=baseline)[0]
    if timings:
        lines += ["## Timings (this run; cached stages take ~0 s)", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.1f} |" for k, v in timings.items()]
    lines += ["", "## Settings", "", "```json", json.dumps(scenario_settings(c), indent=1), "```", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    atomic_write_text(out / "timings.json", json.dumps(timings, indent=1))
    from bayesrm.evaluation.report import save_curves

    save_curves(out / "curves.json", flat)
    return path


def seeds_summary(out: Path, config: ScenarioConfig, seed_dirs: dict[int, Path]) -> Path:
    """Pool runs with different seeds (same prompts and samples): per prompt, each estimate is
    averaged over seeds, then bootstrapped over prompts; proxy metrics are averaged."""
    from bayesrm.alignment.bon import average_over_seeds
    from bayesrm.evaluation.report import load_curves

    per_seed = [load_curves(d / "curves.json") for d in seed_dirs.values()]
    names = [n for n in per_seed[0] if all(n in curves for curves in per_seed)]
    all_curves: dict[str, dict[str, Any]] = {}
    for name in names:
        proxy, _, spec = name.partition("/")
        all_curves.setdefault(proxy, {})[spec] = average_over_seeds(
            [curves[name] for curves in per_seed], n_boot=config.bon.n_boot, seed=config.seed)
    proxy_metrics: dict[str, dict[str, float]] = {}
    for proxy in all_curves:
        found = [json.loads(p.read_text()) for d in seed_dirs.values() if (p := d / "proxies" / proxy / "metrics.json").exists()]
        if found:
            proxy_metrics[proxy] = {k: sum(m[k] for m in found) / len(found) for k in ("accuracy", "nll", "ece")}
    note = (f"Pooled over seeds {sorted(seed_dirs)} (preference labels, training, tie-breaking): each prompt's "
            "estimate is averaged over seeds, bands are bootstrapped over prompts. Per-seed reports: "
            + ", ".join(f"[seed {s}]({d.name}/report.md)" for s, d in sorted(seed_dirs.items())) + ".")
    select_curves: dict[str, dict[str, Any]] | None = None
    select_files = [d / "select_curves.json" for d in seed_dirs.values()]
    if config.bon.selection_prompts and all(f.exists() for f in select_files):
        per_seed_sel = [load_curves(f) for f in select_files]
        select_curves = {}
        for name in [n for n in per_seed_sel[0] if all(n in cs for cs in per_seed_sel)]:
            proxy, _, spec = name.partition("/")
            select_curves.setdefault(proxy, {})[spec] = average_over_seeds(
                [cs[name] for cs in per_seed_sel], n_boot=config.bon.n_boot, seed=config.seed)
    return write_summary(out, config, all_curves, proxy_metrics, [], {}, runs_note=note, select_curves=select_curves)
