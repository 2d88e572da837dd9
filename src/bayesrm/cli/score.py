"""`bayesrm score`: rewards (mean, variance, members) for (prompt, response) records."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="Score (prompt, response) records with a saved reward model.", description=__doc__)
    p.add_argument("--config", help="YAML file of option: value defaults (flags given here win).")
    p.add_argument("--model", required=True, help="A directory saved by bayesrm (any kind).")
    p.add_argument("--input", required=True, help="JSONL with fields 'prompt' (text or chat messages) and 'response'.")
    p.add_argument("--output", default="-", help="JSONL output: the input records plus reward, reward_var, reward_std (- = stdout).")
    p.add_argument("--prompt-field", default="prompt", help="Name of the prompt field in the input.")
    p.add_argument("--response-field", default="response", help="Name of the response field in the input.")
    p.add_argument("--batch-size", type=int, default=32, help="Scoring batch size.")
    p.set_defaults(run=run, config_holds_options=True)


def check_output_path(output: str) -> Path | None:
    """The --output file (None for stdout), checked before any scoring: not a directory, its folder exists."""
    if output == "-":
        return None
    path = Path(output)
    if path.is_dir():
        raise ValueError(f"--output {output}: is a directory; give a file name, e.g. {path / 'scored.jsonl'}")
    if not path.parent.is_dir():
        raise ValueError(f"--output {output}: the folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise ValueError(f"--output {output}: the folder {path.parent} is not writable")
    return path


def run(args: argparse.Namespace) -> int:
    from bayesrm.data.loading import read_scoring_records
    from bayesrm.fileio import atomic_write_text
    from bayesrm.registry import load_scorer

    output = check_output_path(args.output)
    records = read_scoring_records(args.input, args.prompt_field, args.response_field)
    scorer = load_scorer(args.model)
    pred = scorer.score([r[args.prompt_field] for r in records], [r[args.response_field] for r in records],
                        batch_size=args.batch_size, progress=output is not None)
    lines = []
    for i, record in enumerate(records):
        row = dict(record, reward=float(pred.mean[i]), reward_var=float(pred.var[i]), reward_std=float(pred.std[i]))
        if pred.members is not None:
            row["reward_members"] = pred.members[:, i].tolist()
        lines.append(json.dumps(row, default=str) + "\n")  # default: Parquet values JSON lacks (bytes, dates)
    if output is None:
        sys.stdout.write("".join(lines))
        return 0
    atomic_write_text(output, "".join(lines))
    print(f"scored {len(records)} records -> {args.output}", file=sys.stderr)
    return 0
