"""`bayesrm report`: best-of-n plots and report from a saved curves.json, or a comparison of RL runs.

    bayesrm report --curves runs/bon/curves.json --out runs/bon/report
    bayesrm report --rl map=runs/rl/map-s0,runs/rl/map-s1 up=runs/rl/up-s0,runs/rl/up-s1 --out runs/rl/compare
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="Plots and markdown report from best-of-n curves or RL runs.", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--curves", help="curves.json written by a best-of-n run (bayesrm.evaluation.report.save_curves).")
    source.add_argument(
        "--rl", nargs="+", metavar="NAME=DIR[,DIR...]",
        help="Compare RL runs: one method per item, its seeds' `bayesrm rl --out` directories comma-separated. "
        "Writes rl_comparison.{png,md,json}.",
    )
    p.add_argument("--out", required=True, help="Output directory (best-of-n: bon.png, uncertainty.png, curves.json, report.md).")
    p.add_argument("--window", type=int, default=5, help="RL: trailing moving-average window in steps (default 5).")
    p.add_argument("--kl-bins", type=int, default=4, help="RL: number of equal-width KL bins of the equal-KL table (default 4).")
    p.add_argument("--methods", nargs="+", help="Only these methods, in this order (default: all, as saved).")
    p.add_argument("--baseline", help="Method to report paired gold gains against (e.g. mean).")
    p.add_argument("--settings", help="JSON file of settings to list in the report (e.g. the run's config).")
    p.add_argument("--title", default="Best-of-n overoptimization report", help="Title of the plots and report.")
    p.set_defaults(run=run)


def parse_rl_runs(items: list[str]) -> dict[str, list[str]]:
    """['map=a,b', 'up=c'] -> {'map': ['a', 'b'], 'up': ['c']}."""
    runs: dict[str, list[str]] = {}
    for item in items:
        name, sep, dirs = item.partition("=")
        if not sep or not name or not dirs:
            raise ValueError(f"--rl expects NAME=DIR[,DIR...], got {item!r}")
        if name in runs:
            raise ValueError(f"--rl: method {name!r} given twice")
        runs[name] = [d for d in dirs.split(",") if d]
    return runs


def run(args: argparse.Namespace) -> int:
    if args.rl:
        from bayesrm.evaluation.rl_compare import write_comparison

        if args.window < 1 or args.kl_bins < 1:
            raise ValueError("--window and --kl-bins must be at least 1")
        paths = write_comparison(parse_rl_runs(args.rl), args.out, window=args.window, n_bins=args.kl_bins)
        no_gold = json.loads(Path(paths["json"]).read_text()).get("logs_without_gold")
        if no_gold:
            print(f"note: no gold reward in {', '.join(no_gold)} (their gold columns are '-')", file=sys.stderr)
        print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
        return 0
    from bayesrm.evaluation.report import load_curves, make_bon_report

    curves = load_curves(args.curves)
    if args.methods:
        unknown = [m for m in args.methods if m not in curves]
        if unknown:
            raise ValueError(f"{args.curves}: no curves named {unknown}; saved: {sorted(curves)}")
        curves = {m: curves[m] for m in args.methods}
    settings = {"curves": str(args.curves)}
    if args.settings:
        try:
            settings.update(json.loads(Path(args.settings).read_text()))
        except json.JSONDecodeError as err:
            raise ValueError(f"{args.settings}: not valid JSON ({err})") from err
    paths = make_bon_report(args.out, curves, settings, timings={}, baseline=args.baseline, title=args.title)
    print(json.dumps({k: str(v) for k, v in paths.items()}, indent=2))
    return 0
