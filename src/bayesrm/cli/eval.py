"""`bayesrm eval`: accuracy, NLL, Brier, ECE and a reliability diagram for any saved reward model."""

from __future__ import annotations

import argparse
from pathlib import Path

from bayesrm.cli.common import add_data_options, load_split
from bayesrm.evaluation.outputs import format_metrics, write_evaluation


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="Evaluate a saved reward model / ensemble / posterior on preference pairs.", description=__doc__)
    p.add_argument("--config", help="YAML file of option: value defaults (flags given here win).")
    p.add_argument("--model", required=True, help="A directory saved by bayesrm (any kind: reward model, ensemble, Laplace).")
    p.add_argument("--part", choices=["test", "validation", "train", "all"], default="test",
                   help="Which part of the split to evaluate (use the split options the model was trained with).")
    p.add_argument("--out", default=None, help="Where metrics.json and reliability.png go (default: MODEL/../eval).")
    p.add_argument("--batch-size", type=int, default=32, help="Scoring batch size.")
    add_data_options(p)
    p.set_defaults(run=run, config_holds_options=True)


def run(args: argparse.Namespace) -> int:
    from bayesrm.registry import load_scorer

    scorer = load_scorer(args.model)
    splits = load_split(args)
    pairs = [p for part in ("train", "validation", "test") for p in splits[part]] if args.part == "all" else splits[args.part]
    if not pairs:
        raise ValueError(f"the {args.part!r} part of the split is empty (check --test-fraction / --validation-fraction)")
    out = Path(args.out) if args.out else Path(args.model).resolve().parent / "eval"
    metrics = write_evaluation(scorer, pairs, out, args.batch_size, f"{Path(args.model).name}: {args.part}")
    print(format_metrics(metrics))
    print(f"wrote {out / 'metrics.json'} and {out / 'reliability.png'}")
    return 0
