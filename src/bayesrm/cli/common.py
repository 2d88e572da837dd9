"""Options and steps shared by several subcommands: which data, how it is split, and the split saved with a model."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

from bayesrm.cli.options import add_dataclass_options, build_dataclass, given
from bayesrm.config import from_mapping, to_mapping
from bayesrm.data.schema import PreferencePair

EMBEDDED_DATA = {"hh-harmless": "embedded_hh_harmless_path"}


@dataclass
class DataOptions:
    """Which preference data to read and how to split it."""

    data: str = "hh-harmless"
    """Preference file (JSONL / JSON / Parquet / .jsonl.gz / saved HF dataset dir) or 'hh-harmless' (embedded HH-RLHF harmless test, MIT)."""
    format: Literal["auto", "standard", "hh"] = "auto"
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
    """Use at most this many pairs (after loading, before splitting); none uses all."""

    def __post_init__(self) -> None:
        if self.max_pairs is not None and self.max_pairs < 1:
            raise ValueError(f"max_pairs must be >= 1, or none for all pairs; got {self.max_pairs}")


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


DATA_OPTIONS_KEY = "data_options"
"""config.json key under which `bayesrm train` saves the DataOptions a model was trained with."""


def data_options(args: argparse.Namespace, model_dir: str | Path | None = None) -> DataOptions:
    """The data options of a command; with ``model_dir``, those saved with the model are the defaults.

    An explicit option that differs from the saved one is refused (it would re-split the data and,
    for ``laplace``, could fit the posterior on test pairs), except ``--data`` naming other data:
    then the model's split does not apply and the given options are used as they are.
    """
    opts: DataOptions = build_dataclass(DataOptions, args)
    saved = saved_data_options(model_dir) if model_dir is not None else None
    if saved is None or (given(args, "data") and not same_data(opts.data, saved.data)):
        return opts
    for f in fields(DataOptions):
        mine, theirs = getattr(opts, f.name), getattr(saved, f.name)
        if f.name != "data" and given(args, f.name) and mine != theirs:
            raise ValueError(
                f"--{f.name.replace('_', '-')} {mine} conflicts with the split the model was trained with "
                f"({f.name}={theirs}, saved in {model_dir}/config.json); omit it to use the saved split"
            )
    return saved


def saved_data_options(model_dir: str | Path) -> DataOptions | None:
    """The DataOptions saved in a model's config.json (a posterior falls back to its reward model's)."""
    from bayesrm.models.checkpoint import read_meta

    for directory in (Path(model_dir), Path(model_dir) / "reward_model"):
        if (directory / "config.json").is_file():
            saved = read_meta(directory).get(DATA_OPTIONS_KEY)
            if saved is not None:
                if isinstance(saved, dict) and saved.get("max_pairs") == 0:  # saved before 0 was refused: it meant all
                    saved = {**saved, "max_pairs": None}
                return from_mapping(DataOptions, saved, f"{directory / 'config.json'}: {DATA_OPTIONS_KEY}")
    return None


def save_data_options(model_dir: str | Path, opts: DataOptions) -> None:
    """Record the data options in the model's config.json (data paths made absolute)."""
    from bayesrm.models.checkpoint import update_meta

    data = opts.data if opts.data in EMBEDDED_DATA or not Path(opts.data).exists() else str(Path(opts.data).resolve())
    update_meta(model_dir, **{DATA_OPTIONS_KEY: to_mapping(dataclasses.replace(opts, data=data))})


def same_data(a: str, b: str) -> bool:
    return a == b or (Path(a).exists() and Path(b).exists() and Path(a).resolve() == Path(b).resolve())


def load_split(opts: DataOptions) -> dict[str, list[PreferencePair]]:
    """Load the data the options name and split it: {'train', 'validation', 'test'} -> pairs."""
    from bayesrm.data.loading import load_preferences
    from bayesrm.data.splits import split_pairs

    result = load_preferences(
        resolve_data_path(opts.data), format=opts.format, columns=parse_columns(opts.columns), skip_invalid=opts.skip_invalid
    )
    if result.skipped:
        print(result.summary())
    pairs = result.pairs[: opts.max_pairs] if opts.max_pairs is not None else result.pairs
    train_fraction = 1.0 - opts.test_fraction - opts.validation_fraction
    splits = split_pairs(pairs, fractions=(train_fraction, opts.validation_fraction, opts.test_fraction), seed=opts.split_seed)
    return {"train": list(splits.train), "validation": list(splits.validation), "test": list(splits.test)}
