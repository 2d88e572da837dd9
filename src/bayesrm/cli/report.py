"""`bayesrm report`: rebuild the best-of-n plots and markdown report from a saved curves.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="Plots and markdown report from best-of-n curves (curves.json).", description=__doc__)
    p.add_argument("--curves", required=True, help="curves.json written by a best-of-n run (bayesrm.evaluation.report.save_curves).")
    p.add_argument("--out", required=True, help="Output directory for bon.png, uncertainty.png, curves.json and report.md.")
    p.add_argument("--methods", nargs="+", help="Only these methods, in this order (default: all, as saved).")
    p.add_argument("--baseline", help="Method to report paired gold gains against (e.g. mean).")
    p.add_argument("--settings", help="JSON file of settings to list in the report (e.g. the run's config).")
    p.add_argument("--title", default="Best-of-n overoptimization report", help="Title of the plots and report.")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
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
