"""`bayesrm score`: rewards (mean, variance, members) for (prompt, response) records."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bayesrm.types import RewardPrediction

from bayesrm.cli.options import add_config_options, add_dataclass_options, build_dataclass
from bayesrm.cli.safety import add_trust_options, trust_kwargs


@dataclass
class ScoreOptions:
    """What to score with which model, and where the rewards go."""

    model: str
    """A directory saved by bayesrm (any kind)."""
    input: str
    """JSONL with fields 'prompt' (text or chat messages) and 'response'."""
    out: str = "-"
    """JSONL output: the input records plus reward, reward_var, reward_std (- = stdout)."""
    prompt_field: str = "prompt"
    """Name of the prompt field in the input."""
    response_field: str = "response"
    """Name of the response field in the input."""
    batch_size: int = 32
    """Scoring batch size."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("score", help="Score (prompt, response) records with a saved reward model.", description=__doc__)
    add_config_options(p)
    add_dataclass_options(p, ScoreOptions, title="scoring")
    p.add_argument("--output", default=argparse.SUPPRESS, help="Deprecated spelling of --out.")
    add_trust_options(p)
    p.set_defaults(run=run)


def check_output_path(output: str) -> Path | None:
    """The --out file (None for stdout), checked before any scoring: not a directory, its folder exists."""
    if output == "-":
        return None
    path = Path(output)
    if path.is_dir():
        raise ValueError(f"--out {output}: is a directory; give a file name, e.g. {path / 'scored.jsonl'}")
    if not path.parent.is_dir():
        raise ValueError(f"--out {output}: the folder {path.parent} does not exist")
    if not os.access(path.parent, os.W_OK):
        raise ValueError(f"--out {output}: the folder {path.parent} is not writable")
    return path


def scored_lines(records: list[dict[str, Any]], pred: RewardPrediction) -> list[str]:
    """One JSON line per record: the record's fields plus reward, reward_var, reward_std (and reward_members)."""
    lines = []
    for i, record in enumerate(records):
        row = dict(record, reward=float(pred.mean[i]), reward_var=float(pred.var[i]), reward_std=float(pred.std[i]))
        if pred.members is not None:
            row["reward_members"] = pred.members[:, i].tolist()
        lines.append(json.dumps(row, default=str) + "\n")  # default: Parquet values JSON lacks (bytes, dates)
    return lines


def run(args: argparse.Namespace) -> int:
    from bayesrm.data.loading import read_scoring_records
    from bayesrm.fileio import atomic_write_text
    from bayesrm.registry import load_scorer

    if "output" in vars(args):
        if "out" in vars(args):
            raise ValueError("give --out only (--output is its deprecated spelling)")
        print("bayesrm score: --output is deprecated; use --out", file=sys.stderr)
        args.out = args.output
        del args.output
    opts: ScoreOptions = build_dataclass(ScoreOptions, args)
    output = check_output_path(opts.out)
    records = read_scoring_records(opts.input, opts.prompt_field, opts.response_field)
    scorer = load_scorer(opts.model, **trust_kwargs(args))
    pred = scorer.score([r[opts.prompt_field] for r in records], [r[opts.response_field] for r in records],
                        batch_size=opts.batch_size, progress=output is not None)
    lines = scored_lines(records, pred)
    if output is None:
        sys.stdout.write("".join(lines))
        return 0
    atomic_write_text(output, "".join(lines))
    print(f"scored {len(records)} records -> {opts.out}", file=sys.stderr)
    return 0
