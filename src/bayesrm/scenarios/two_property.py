"""The two-property variant of a best-of-n scenario: sum of raw rewards vs sum of log-sigmoid transforms
(a logical AND, Wang et al. 2024), scored by P(the best-of-n pick satisfies both properties).

One MAP proxy per property, each trained on pairs labelled by its own gold (the second's pairs, proxy and
scores are stages of the runner tagged ``_prop2``). Thresholds are given, or chosen as a quantile of each
property's gold over the preference-prompt samples (never the best-of-n prompts). The log-sigmoid reference
r_ref(x) is the per-prompt ``quantile`` of that proxy's rewards over the prompt's N policy samples (the
reference policy's samples; no gold involved).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch

from bayesrm.data.schema import PreferencePair
from bayesrm.fileio import atomic_write_text
from bayesrm.scenarios.config import ProxyConfig
from bayesrm.scenarios.stages import fingerprint, judge_identity
from bayesrm.types import RewardPrediction

if TYPE_CHECKING:
    from bayesrm.alignment.bon import BoNCurve
    from bayesrm.scenarios.bon import BoNRunner

RAW, AND = "sum of raw rewards", "sum of log-sigmoid (AND)"


def preference_thresholds(runner: BoNRunner, judges: list[tuple[Any, float]], q: float) -> list[float]:
    """The q-quantile of each (judge, sign)'s signed gold over the preference-prompt samples (from the caches)."""
    c = runner.config
    train_prompts, _ = runner.prompts()
    samples = runner.samples(train_prompts, c.preferences.samples_per_prompt, "preference data")
    flat_p = [p for p, row in zip(train_prompts, samples) for _ in row]
    flat_r = [r for row in samples for r in row]
    return [float(torch.quantile(sign * runner.judge_scores(judge, flat_p, flat_r).mean.double(), q)) for judge, sign in judges]


def and_selections(r1: RewardPrediction, r2: RewardPrediction, prompt_ids: list[str], quantile: float) -> dict[str, torch.Tensor]:
    """Selection scores [B] of the best-of-n pick: each proxy alone, summed raw, summed z-scored, summed log-sigmoid."""
    from bayesrm.rewards import parse_reward
    from bayesrm.rewards.transforms import Standardizer, SumOf

    z1, z2 = Standardizer.fit(r1)(r1), Standardizer.fit(r2)(r2)
    both = SumOf([parse_reward(f"log_sigmoid:q={quantile}"), parse_reward(f"log_sigmoid:q={quantile}")])
    both.fit([r1, r2], prompt_ids)
    return {"proxy 1 only": r1.mean, "proxy 2 only": r2.mean, RAW: r1.mean + r2.mean,
            "sum of z-scored rewards": z1.mean + z2.mean, AND: both([r1, r2], prompt_ids)}


def two_property_section(runner: BoNRunner, train1: list[PreferencePair], valid1: list[PreferencePair],
                         gold1: RewardPrediction, prompt_ids: list[str]) -> str:
    """Markdown: P(pick satisfies both) per selection, paired differences vs the raw sum; writes
    two_property.json, two_property_curves.json and two_property.png into the run directory."""
    from bayesrm.alignment.bon import bon_curves, satisfies_all
    from bayesrm.evaluation.gold import make_judge
    from bayesrm.evaluation.report import save_curves

    c, tp = runner.config, runner.config.two_property
    N = c.bon.n_samples
    P = len(prompt_ids) // N
    map_spec = next((p for p in c.proxies if p.method == "map"), ProxyConfig())
    judge2 = make_judge(tp.gold, device=runner.device)
    train2, valid2 = runner.pairs(judge2, sign=tp.sign, tag="_prop2")
    rm1 = runner.proxy(map_spec, train1, valid1)
    rm2 = runner.proxy(map_spec, train2, valid2, tag="_prop2")
    gold2 = RewardPrediction.point(tp.sign * runner.scores("gold_prop2", judge2, fingerprint({"gold": judge_identity(judge2)}), gold=True).mean)
    r1 = runner.scores(map_spec.name, rm1, runner.stages.fingerprint_of(f"proxy {map_spec.name}"))
    r2 = runner.scores(f"{map_spec.name}_prop2", rm2, runner.stages.fingerprint_of(f"proxy {map_spec.name}_prop2"))
    if tp.threshold_quantile is None:
        thresholds, how = list(tp.thresholds), "given"
    else:
        thresholds = preference_thresholds(runner, [(make_judge(c.gold, device=runner.device), 1.0), (judge2, tp.sign)], tp.threshold_quantile)
        how = f"the {tp.threshold_quantile:g} quantile of each property's gold over the preference-prompt samples"
    g1, g2 = gold1.mean.view(P, N), gold2.mean.view(P, N)
    extra = {"p_all": satisfies_all([g1, g2], thresholds), "p_1": satisfies_all([g1], thresholds[:1]),
             "p_2": satisfies_all([g2], thresholds[1:]), "gold2": g2}
    selections = and_selections(r1, r2, prompt_ids, tp.quantile)
    curves = {name: bon_curves(sel.view(P, N), g1, c.bon_ns(), n_boot=c.bon.n_boot, seed=c.seed, extra=extra)
              for name, sel in selections.items()}
    metrics = {}
    for tag in ("", "_prop2"):
        path = runner.out / "proxies" / f"{map_spec.name}{tag}" / "metrics.json"
        metrics[tag] = json.loads(path.read_text()) if path.exists() else {}
    save_curves(runner.out / "two_property_curves.json", curves)
    info = {"gold": [c.gold, tp.gold], "sign": [1.0, tp.sign], "thresholds": thresholds, "thresholds_from": how,
            "quantile": tp.quantile, "train_pairs": [len(train1), len(train2)], "validation_pairs": [len(valid1), len(valid2)],
            "proxy_validation_accuracy": [metrics[""].get("accuracy"), metrics["_prop2"].get("accuracy")],
            "base_rates": {k: float(v.mean()) for k, v in extra.items() if k.startswith("p_")}}
    atomic_write_text(runner.out / "two_property.json", json.dumps(info, indent=1))
    plot_two_property(curves, runner.out / "two_property.png", c.gold, f"{tp.gold} x {tp.sign:g}", thresholds)
    return _markdown(curves, info, N, P)


def _markdown(curves: Mapping[str, BoNCurve], info: Mapping[str, Any], N: int, P: int) -> str:
    from bayesrm.evaluation.report import gain_table, stat_table

    (gold1, gold2), (_, sign2), (t1, t2) = info["gold"], info["sign"], info["thresholds"]
    acc = [_fmt_acc(a) for a in info["proxy_validation_accuracy"]]
    last = {name: {s: float(cv.stats[s].mean[-1]) for s in ("p_all", "p_1", "p_2", "gold", "gold2")} for name, cv in curves.items()}
    lines = ["## Two properties: logical AND by summed log-sigmoid rewards", "",
             f"Property 1: gold `{gold1}` >= {t1:.4g}; property 2: gold `{gold2}` x {sign2:g} >= {t2:.4g} "
             f"(thresholds: {info['thresholds_from']}). One MAP proxy per property, trained on "
             f"{info['train_pairs'][0]} / {info['train_pairs'][1]} pairs labelled by its own gold (accuracy on its held-out pairs, whose labels carry the same noise: "
             f"{acc[0]} / {acc[1]}). Log-sigmoid reference r_ref(x): the per-prompt {info['quantile']:g} quantile of "
             f"each proxy's rewards over the prompt's {N} samples. {P} best-of-n prompts; 95% bootstrap bands over prompts"
             + (f"; each prompt's estimates averaged over the seeds {info['seeds']} first." if info.get("seeds") else "."), "",
             "P(best-of-n pick satisfies both properties):", "", *stat_table(curves, "p_all"), "",
             f"Paired difference in P(both) against `{RAW}` (`*`: the band excludes 0):", "", *gain_table(curves, RAW, "p_all"), "",
             f"At n = {N}:", "", "| selection | P(both) | P(property 1) | P(property 2) | gold 1 | gold 2 (signed) |",
             "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {name} | {v['p_all']:.3f} | {v['p_1']:.3f} | {v['p_2']:.3f} | {v['gold']:.3f} | {v['gold2']:.3f} |"
              for name, v in last.items()]
    lines += ["", "![two properties](two_property.png)", ""]
    return "\n".join(lines) + "\n"


def _fmt_acc(a: Any) -> str:
    if isinstance(a, list):
        return "(" + ", ".join(_fmt_acc(x) for x in a) + " over the seeds)"
    return "-" if a is None else f"{a:.3f}"


def pool_two_property(seed_dirs: Mapping[int, str | Path], out: str | Path) -> str:
    """The two-property section pooled over runs with different seeds on the same prompts and samples
    (each a directory a run with ``two_property`` wrote): two_property_curves.json, two_property.json and
    two_property.png under ``out``; returns the markdown."""
    from bayesrm.alignment.bon import average_over_seeds
    from bayesrm.evaluation.report import load_curves, save_curves

    out = Path(out)
    runs = {seed: (load_curves(Path(d) / "two_property_curves.json"), json.loads((Path(d) / "two_property.json").read_text()))
            for seed, d in seed_dirs.items()}
    first_curves, first_info = next(iter(runs.values()))
    for seed, (_, info) in runs.items():
        if info["thresholds"] != first_info["thresholds"] or info["gold"] != first_info["gold"]:
            raise ValueError(f"seed {seed}: other gold properties or thresholds than seed {next(iter(runs))}; cannot pool")
    meta = next(iter(first_curves.values())).meta
    curves = {name: average_over_seeds([c[name] for c, _ in runs.values()], int(meta.get("n_boot", 1000)), int(meta.get("seed", 0)))
              for name in first_curves}
    info = {**first_info, "seeds": list(runs), "train_pairs": first_info["train_pairs"],
            "proxy_validation_accuracy": [[i["proxy_validation_accuracy"][j] for _, i in runs.values()] for j in (0, 1)]}
    out.mkdir(parents=True, exist_ok=True)
    save_curves(out / "two_property_curves.json", curves)
    atomic_write_text(out / "two_property.json", json.dumps(info, indent=1))
    first = next(iter(curves.values()))
    plot_two_property(curves, out / "two_property.png", info["gold"][0], f"{info['gold'][1]} x {info['sign'][1]:g}",
                      info["thresholds"])
    return _markdown(curves, info, first.n_samples, first.n_prompts)


def plot_two_property(curves: Mapping[str, BoNCurve], path: str | Path, name1: str, name2: str, thresholds: list[float]) -> Path:
    """Four panels against KL: P(both), gold 1 and (signed) gold 2 of the pick, with the bootstrap bands over
    prompts, and each selection's P(both) minus that of the raw sum with its paired band."""
    from bayesrm.alignment.bon import paired_difference
    from bayesrm.evaluation.plots import PALETTE, figure, save_figure

    fig, axes = figure(4, width=4.3)
    panels = [("p_all", "P(pick satisfies both)", None), ("gold", f"gold 1 of the pick ({name1})", thresholds[0]),
              ("gold2", f"gold 2 of the pick ({name2})", thresholds[1])]
    for ax, (stat, label, line) in zip(axes[:3], panels):
        for i, (name, curve) in enumerate(curves.items()):
            band, x, color = curve.stats[stat], curve.kl.numpy(), PALETTE[i % len(PALETTE)]
            style = "-" if name in (RAW, AND) else ":"
            ax.fill_between(x, band.lo.numpy(), band.hi.numpy(), color=color, alpha=0.12, linewidth=0)
            ax.plot(x, band.mean.numpy(), style, color=color, linewidth=1.6, marker="o", markersize=2.5, label=name)
        if line is not None:
            ax.axhline(line, color="grey", linewidth=0.8, linestyle="--")
        ax.set_ylabel(label, fontsize=9)
        ax.set_xlabel("KL(best-of-n || policy) [nats]")
        ax.grid(alpha=0.3, linewidth=0.5)
    ax, base = axes[3], curves[RAW]
    for i, (name, curve) in enumerate(curves.items()):
        if name in (RAW, AND) or name.startswith("sum"):
            meta = base.meta
            d = paired_difference(curve, base, "p_all", int(meta.get("n_boot", 1000)), int(meta.get("seed", 0)))
            x, color = curve.kl.numpy(), PALETTE[i % len(PALETTE)]
            ax.fill_between(x, d.lo.numpy(), d.hi.numpy(), color=color, alpha=0.15, linewidth=0)
            ax.plot(x, d.mean.numpy(), "-" if name in (RAW, AND) else ":", color=color, linewidth=1.6, marker="o", markersize=2.5)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    ax.set_ylabel(f"P(both) minus that of the {RAW} (paired)", fontsize=9)
    ax.set_xlabel("KL(best-of-n || policy) [nats]")
    ax.grid(alpha=0.3, linewidth=0.5)
    axes[0].legend(fontsize=7, loc="best", title="selected by", title_fontsize=7)
    first = next(iter(curves.values()))
    fig.suptitle(f"Two properties, {first.n_prompts} prompts x {first.n_samples} samples (dashed grey: threshold)", fontsize=10)
    return save_figure(fig, path)
