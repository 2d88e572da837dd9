"""Options and steps shared by several subcommands (data selection, model options, evaluation output)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bayesrm.cli.options import add_dataclass_options, build_dataclass
from bayesrm.data.schema import PreferencePair

EMBEDDED_DATA = {"hh-harmless": "embedded_hh_harmless_path"}


@dataclass
class DataOptions:
    """Which preference data to read and how to split it."""

    data: str = "hh-harmless"
    """Preference file (JSONL / JSON / Parquet / .jsonl.gz / saved HF dataset dir) or 'hh-harmless' (embedded HH-RLHF harmless test, MIT)."""
    format: str = "auto"
    """auto | standard (prompt, chosen, rejected) | hh (whole HH-RLHF dialogues in chosen / rejected)."""
    columns: list[str] | None = None
    """Column mapping as name=column pairs, e.g. prompt=question chosen=good rejected=bad."""
    skip_invalid: bool = False
    """Skip (and count) invalid records instead of stopping at the first one."""
    test_fraction: float = 0.2
    """Held-out fraction (the 'test' part); train and eval must use the same split options."""
    validation_fraction: float = 0.0
    """Validation fraction, evaluated during training when > 0."""
    split_seed: int = 0
    """Seed of the train / validation / test split."""
    max_pairs: int | None = None
    """Use at most this many pairs (after loading, before splitting)."""


def add_data_options(parser: argparse.ArgumentParser) -> None:
    add_dataclass_options(parser, DataOptions, title="data")


def resolve_data_path(name: str) -> str:
    if name in EMBEDDED_DATA:
        from bayesrm.data import loading

        return str(getattr(loading, EMBEDDED_DATA[name])())
    return name


def parse_columns(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    out = {}
    for item in pairs:
        name, sep, column = item.partition("=")
        if not sep or not name or not column:
            raise ValueError(f"--columns expects name=column pairs, got {item!r}")
        out[name] = column
    return out


def load_split(args: argparse.Namespace) -> dict[str, list[PreferencePair]]:
    """Load the data the options name and split it: {'train', 'validation', 'test'} -> pairs."""
    from bayesrm.data.loading import load_preferences
    from bayesrm.data.splits import split_pairs

    opts: DataOptions = build_dataclass(DataOptions, vars(args))
    result = load_preferences(
        resolve_data_path(opts.data), format=opts.format, columns=parse_columns(opts.columns), skip_invalid=opts.skip_invalid
    )
    if result.skipped:
        print(result.summary())
    pairs = result.pairs[: opts.max_pairs] if opts.max_pairs else result.pairs
    train_fraction = 1.0 - opts.test_fraction - opts.validation_fraction
    splits = split_pairs(pairs, fractions=(train_fraction, opts.validation_fraction, opts.test_fraction), seed=opts.split_seed)
    return {"train": list(splits.train), "validation": list(splits.validation), "test": list(splits.test)}
