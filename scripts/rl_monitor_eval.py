"""Evaluate the reward-hacking monitor (bayesrm.alignment.rl.monitor) on finished RL logs.

    python scripts/rl_monitor_eval.py docs/results/data/rl_compare/*.log.jsonl docs/results/data/rl_small_*_log.jsonl \
        --out docs/results/data/rl_monitor_eval.json

Per log: whether the run over-optimised in hindsight (gold fell >= gold_drop noise SDs below its
best while the proxy did not fall), the gold-peak step, the first alarm with the gold signal and
label-free (gold hidden), and the lead time (peak - alarm). Then the lead times on over-optimising
runs and the false-alarm rate on the others. The monitor's default thresholds are used as they are.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bayesrm.alignment.rl.monitor import MonitorConfig, evaluate_monitor
from bayesrm.alignment.rl.tracking import JsonlLog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logs", nargs="+", help="log.jsonl files of `bayesrm rl` runs (with gold)")
    parser.add_argument("--out", help="write the per-log results and the summary as JSON here")
    args = parser.parse_args()
    rows = []
    for path in args.logs:
        records = sorted(JsonlLog(path).read(), key=lambda r: r.get("step", 0))
        rows.append({"log": path, **evaluate_monitor(records)})
    over = [r for r in rows if r["over_optimised"]]
    rest = [r for r in rows if not r["over_optimised"]]
    summary = {
        "config": MonitorConfig().__dict__,
        "over_optimised_runs": len(over),
        "lead_with_gold": [r["lead_with_gold"] for r in over],
        "lead_label_free": [r["lead_label_free"] for r in over],
        "false_alarms_with_gold": f"{sum(r['alarm_with_gold'] is not None for r in rest)}/{len(rest)}",
        "false_alarms_label_free": f"{sum(r['alarm_label_free'] is not None for r in rest)}/{len(rest)}",
    }
    print("| log | steps | over-optimised | gold peak | gold drop at end (SD) | alarm (gold) | alarm (label-free) |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for r in rows:
        drop = "-" if r["final_gold_drop_sd"] is None else f"{r['final_gold_drop_sd']:.1f}"
        print(f"| {Path(r['log']).name} | {r['steps']} | {'yes' if r['over_optimised'] else 'no'} | {r['gold_peak_step']} | {drop} "
              f"| {r['alarm_with_gold'] or '-'} | {r['alarm_label_free'] or '-'} |")
    print(json.dumps(summary, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps({"runs": rows, "summary": summary}, indent=1) + "\n")


if __name__ == "__main__":
    main()
