"""`bayesrm eval`: accuracy, NLL, Brier, ECE and a reliability diagram for any saved reward model."""

from __future__ import annotations

import argparse
from pathlib import Path

from bayesrm.cli.common import add_data_options, data_options, load_split
from bayesrm.cli.options import add_config_options
from bayesrm.cli.safety import add_trust_options, trust_kwargs
from bayesrm.evaluation.outputs import format_metrics, write_evaluation


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="Evaluate a saved reward model / ensemble / posterior on preference pairs.", description=__doc__)
    add_config_options(p)
    p.add_argument("--model", required=True, help="A directory saved by bayesrm (any kind: reward model, ensemble, Laplace).")
    p.add_argument("--part", choices=["test", "validation", "train", "all"], default="test",
                   help="Which part of the split to evaluate (the split saved with the model unless --data names other data).")
    p.add_argument("--out", default=None, help="Where metrics.json and reliability.png go (default: MODEL/../eval).")
    p.add_argument("--batch-size", type=int, default=32, help="Scoring batch size.")
    add_data_options(p)
    add_trust_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bayesrm.registry import load_scorer

    data = data_options(args, args.model)  # by default the split the model was trained with
    scorer = load_scorer(args.model, **trust_kwargs(args))
    splits = load_split(data)
    pairs = [p for part in ("train", "validation", "test") for p in splits[part]] if args.part == "all" else splits[args.part]
    if not pairs:
        raise ValueError(f"the {args.part!r} part of the split is empty (check --test-fraction / --validation-fraction)")
    out = Path(args.out) if args.out else Path(args.model).resolve().parent / "eval"
    metrics = write_evaluation(scorer, pairs, out, args.batch_size, f"{Path(args.model).name}: {args.part}")
    print(format_metrics(metrics))
    print(f"wrote {out / 'metrics.json'} and {out / 'reliability.png'}")
    return 0
