"""`bayesrm score`: rewards (mean, variance, members) for (prompt, response) records."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bayesrm.cli.safety import add_trust_options, trust_kwargs


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="Score (prompt, response) records with a saved reward model.", description=__doc__)
    p.add_argument("--config", help="YAML file of option: value defaults (flags given here win).")
    p.add_argument("--model", required=True, help="A directory saved by bayesrm (any kind).")
    p.add_argument("--input", required=True, help="JSONL with fields 'prompt' (text or chat messages) and 'response'.")
    p.add_argument("--output", default="-", help="JSONL output: the input records plus reward, reward_var, reward_std (- = stdout).")
    p.add_argument("--prompt-field", default="prompt", help="Name of the prompt field in the input.")
    p.add_argument("--response-field", default="response", help="Name of the response field in the input.")
    p.add_argument("--batch-size", type=int, default=32, help="Scoring batch size.")
    add_trust_options(p)
    p.set_defaults(run=run, config_holds_options=True)


def run(args: argparse.Namespace) -> int:
    from bayesrm.data.loading import read_scoring_records
    from bayesrm.registry import load_scorer

    records = read_scoring_records(args.input, args.prompt_field, args.response_field)
    scorer = load_scorer(args.model, **trust_kwargs(args))
    pred = scorer.score([r[args.prompt_field] for r in records], [r[args.response_field] for r in records],
                        batch_size=args.batch_size, progress=args.output != "-")
    out = sys.stdout if args.output == "-" else Path(args.output).open("w")
    try:
        for i, record in enumerate(records):
            row = dict(record, reward=float(pred.mean[i]), reward_var=float(pred.var[i]), reward_std=float(pred.std[i]))
            if pred.members is not None:
                row["reward_members"] = pred.members[:, i].tolist()
            out.write(json.dumps(row) + "\n")
    finally:
        if out is not sys.stdout:
            out.close()
    if args.output != "-":
        print(f"scored {len(records)} records -> {args.output}", file=sys.stderr)
    return 0
