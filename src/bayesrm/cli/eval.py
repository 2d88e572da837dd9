"""`bayesrm eval`: accuracy, calibration, uncertainty quality and benchmark-suite scores for one or
several saved reward models on one or several files, with tables, plots and an HTML report."""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
from pathlib import Path

from bayesrm.cli.common import DataOptions, data_options, load_split
from bayesrm.cli.options import add_config_options, add_dataclass_options
from bayesrm.cli.safety import add_trust_options, trust_kwargs
from bayesrm.evaluation.outputs import format_metrics
from bayesrm.fileio import atomic_write_text

PARTS = ("test", "validation", "train", "all")
SUITE_CHOICES = ("auto", "pairs", "rewardbench", "rewardbench2", "rm-bench")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="Evaluate saved reward models / ensembles / posteriors on preference files and suites.",
                       description=__doc__)
    add_config_options(p)
    p.add_argument("--model", nargs="+", required=True,
                   help="One or more directories saved by bayesrm (any kind: reward model, ensemble, Laplace).")
    p.add_argument("--data", nargs="+", default=argparse.SUPPRESS,
                   help="Preference files or suites (RewardBench v1 / v2, RM-Bench layouts; docs/evaluation.md), or "
                        "'hh-harmless'. FILE@PART picks a part of the split for that file (default: --part). "
                        "Default: the data the (first) model was trained with, split as it was.")
    p.add_argument("--part", choices=PARTS, default="test",
                   help="Which part of the split to evaluate for plain preference files (use the split options the "
                        "model was trained with; 'all' for a dedicated test file). Suites are always used whole.")
    p.add_argument("--suite", choices=SUITE_CHOICES, default="auto",
                   help="Layout of the --data files: auto detects it from the first record.")
    p.add_argument("--shifted", nargs="+", default=None,
                   help="Preference files whose chosen responses are 'shifted': report the AUROC of each model's "
                        "response std for telling them from the in-distribution ones (--shift-in).")
    p.add_argument("--shift-in", default=None,
                   help="In-distribution preference file for --shifted (default: the first --data set); chosen responses.")
    p.add_argument("--shift-max", type=int, default=300, help="Use at most this many responses per --shifted / --shift-in file.")
    p.add_argument("--out", default=None,
                   help="Output directory (default: MODEL/../eval for one model, else runs/eval): results.json, "
                        "results.md, PNGs, report.html; with one model and one pair file also metrics.json and reliability.png.")
    p.add_argument("--batch-size", type=int, default=32, help="Scoring batch size.")
    add_dataclass_options(p, DataOptions, only=[f.name for f in dataclasses.fields(DataOptions) if f.name != "data"], title="data")
    add_trust_options(p)
    p.set_defaults(run=run)


def model_names(dirs: list[str]) -> list[str]:
    """Short unique names: the directory name, or its parent's for '.../model'."""
    names = []
    for d in dirs:
        path = Path(d.rstrip("/"))
        name = path.parent.name if path.name == "model" and path.parent.name else path.name
        base, k = name, 2
        while name in names:
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def _spec(text: str, default_part: str) -> tuple[str, str]:
    path, sep, part = text.rpartition("@")
    return (path, part) if sep and part in PARTS else (text, default_part)


def _set_name(path: str, part: str) -> str:
    name = Path(path).name
    for ext in (".gz", ".jsonl", ".json", ".parquet", ".ndjson"):
        name = name.removesuffix(ext)
    return name if part == "all" else f"{name}@{part}"


def _pairs(args: argparse.Namespace, path: str | None, part: str):
    """Pairs of one file (None: the first model's training data), split by the data options; a file
    that is the model's own training data gets the split saved with the model."""
    values = {k: v for k, v in vars(args).items() if k != "data"}
    if path is not None:  # named here: given, as --data would be
        values["data"] = path
        if "options_given" in values:
            values["options_given"] = values["options_given"] | {"data"}
    opts = data_options(argparse.Namespace(**values), args.model[0])
    splits = load_split(opts)
    pairs = [p for name in ("train", "validation", "test") for p in splits[name]] if part == "all" else splits[part]
    if not pairs:
        raise ValueError(f"{opts.data}: the {part!r} part of the split is empty (check --test-fraction / --validation-fraction)")
    return pairs


def load_sets(args: argparse.Namespace):
    from bayesrm.cli.common import resolve_data_path
    from bayesrm.evaluation.runner import EvalSet
    from bayesrm.evaluation.suites import load_suite, sniff_suite

    sets = []
    if "data" not in vars(args):  # the model's own data and split
        return [EvalSet(f"training data@{args.part}", pairs=_pairs(args, None, args.part))]
    for text in args.data:
        path, part = _spec(text, args.part)
        kind = args.suite if args.suite != "auto" else (sniff_suite(resolve_data_path(path)) or "pairs")
        name = _set_name(path, "all" if kind != "pairs" else part)
        if kind == "pairs":
            sets.append(EvalSet(name, pairs=_pairs(args, path, part)))
        else:
            sets.append(EvalSet(name, suite=load_suite(resolve_data_path(path), kind)))
    return sets


def load_shift(args: argparse.Namespace, sets):
    from bayesrm.evaluation.runner import ShiftSet

    if not args.shifted:
        return None
    if args.shift_max < 1:
        raise ValueError("--shift-max must be positive")
    if args.shift_in:
        path, part = _spec(args.shift_in, args.part)
        base, base_name = _pairs(args, path, part), _set_name(path, part)
    else:
        first = sets[0]
        base = first.pairs if first.pairs is not None else first.suite.pairs()
        base_name = first.name
    base = base[: args.shift_max]
    shifted = [p for text in args.shifted for p in _pairs(args, *_spec(text, "all"))[: args.shift_max]]
    names = ", ".join(_set_name(*_spec(t, "all")) for t in args.shifted)
    return ShiftSet(f"{base_name} (in, {len(base)}) vs {names} (shifted, {len(shifted)}), chosen responses",
                    [p.prompt for p in base], [p.chosen for p in base], [p.prompt for p in shifted], [p.chosen for p in shifted])


def run(args: argparse.Namespace) -> int:
    from bayesrm.evaluation.runner import evaluate_many
    from bayesrm.registry import load_scorer

    if args.batch_size < 1:
        raise ValueError("--batch-size must be positive")
    scorers = {name: load_scorer(d, **trust_kwargs(args)) for name, d in zip(model_names(args.model), args.model)}
    sets = load_sets(args)
    shift = load_shift(args, sets)
    default_out = Path(args.model[0]).resolve().parent / "eval" if len(args.model) == 1 else Path("runs/eval")
    out = Path(args.out) if args.out else default_out
    data = evaluate_many(scorers, sets, out, batch_size=args.batch_size, shift=shift, progress=True)
    for model in data["models"]:
        for s in data["sets"]:
            entry = data["results"][model][s]
            line = format_metrics(entry["metrics"]) if "metrics" in entry else ""
            if "suite" in entry:
                line += f"  {entry['suite']['suite']} score={entry['suite']['score']:.4g}"
            print(f"{model} | {s}: {line.strip()}")
    if len(scorers) == 1 and len(sets) == 1 and "metrics" in data["results"][data["models"][0]][sets[0].name]:
        # the single-model layout `bayesrm train` also writes
        atomic_write_text(out / "metrics.json", json.dumps(data["results"][data["models"][0]][sets[0].name]["metrics"], indent=2))
        shutil.copyfile(out / data["images"][0], out / "reliability.png")
    print(f"wrote {out / 'results.md'}, {out / 'results.json'} and {out / 'report.html'}")
    return 0
