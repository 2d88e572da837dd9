"""The two-property variant of a best-of-n scenario: sum of raw rewards vs sum of log-sigmoid transforms
(a logical AND), scored by P(the best-of-n pick satisfies both properties)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bayesrm.data.schema import PreferencePair
from bayesrm.scenarios.config import ProxyConfig
from bayesrm.scenarios.stages import fingerprint, judge_identity
from bayesrm.types import RewardPrediction

if TYPE_CHECKING:
    from bayesrm.scenarios.bon import BoNRunner


def two_property_section(runner: BoNRunner, train1: list[PreferencePair], valid1: list[PreferencePair],
                         gold1: RewardPrediction, prompt_ids: list[str]) -> str:
    """Markdown: P(pick satisfies both) for summed raw rewards and summed log-sigmoid rewards, one MAP proxy per
    property (the second's pairs, proxy and scores are stages of ``runner`` tagged ``_prop2``)."""
    from bayesrm.alignment.bon import bon_curves, satisfies_all
    from bayesrm.evaluation.gold import make_judge
    from bayesrm.rewards import parse_reward

    c, tp = runner.config, runner.config.two_property
    P, N = c.bon.prompts, c.bon.n_samples
    map_spec = next((p for p in c.proxies if p.method == "map"), ProxyConfig())
    judge2 = make_judge(tp.gold)
    train2, valid2 = runner.pairs(judge2, sign=tp.sign, tag="_prop2")
    rm1 = runner.proxy(map_spec, train1, valid1)
    rm2 = runner.proxy(map_spec, train2, valid2, tag="_prop2")
    gold2 = RewardPrediction.point(tp.sign * runner.scores("gold_prop2", judge2, fingerprint({"gold": judge_identity(judge2)}), gold=True).mean)
    r1 = runner.scores(map_spec.name, rm1, runner.stages.fingerprint_of(f"proxy {map_spec.name}"))
    r2 = runner.scores(f"{map_spec.name}_prop2", rm2, runner.stages.fingerprint_of(f"proxy {map_spec.name}_prop2"))
    both = satisfies_all([gold1.mean.view(P, N), gold2.mean.view(P, N)], tp.thresholds)
    selections = {"sum of raw rewards": r1.mean + r2.mean}
    transformed = []
    for pred in (r1, r2):
        reward = parse_reward(f"log_sigmoid:q={tp.quantile}")
        reward.fit(pred, prompt_ids)
        transformed.append(reward(pred, prompt_ids))
    selections["sum of log-sigmoid (AND)"] = transformed[0] + transformed[1]
    curves = {name: bon_curves(sel.view(P, N), gold1.mean.view(P, N), c.bon_ns(), n_boot=c.bon.n_boot, seed=c.seed,
                               extra={"p_all": both, "gold2": gold2.mean.view(P, N)})
              for name, sel in selections.items()}
    ns = c.bon_ns()
    lines = ["## Two properties: logical AND by summed log-sigmoid rewards", "",
             f"Gold 1 `{c.gold}` (>= {tp.thresholds[0]}), gold 2 `{tp.gold}` x {tp.sign:g} (>= {tp.thresholds[1]}); "
             f"one MAP proxy per property; reference r_ref(x) = per-prompt {tp.quantile} quantile over the N samples.", "",
             "P(best-of-n pick satisfies both properties):", "",
             "| selection | " + " | ".join(f"n={n}" for n in ns) + " |", "|---" * (len(ns) + 1) + "|"]
    for name, curve in curves.items():
        band = curve.stats["p_all"]
        lines.append(f"| {name} | " + " | ".join(f"{float(m):.3f}" for m in band.mean) + " |")
    return "\n".join(lines) + "\n"
