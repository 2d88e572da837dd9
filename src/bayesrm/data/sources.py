"""Record sources: every file type (and saved dataset directory) the preference and scoring
loaders read, as an iterator of ``(1-based line or record number, record)``.

A record that cannot be decoded (malformed JSON, invalid UTF-8, nested too deeply, an integer
literal too long to convert) comes as a DataError in place of the record (the caller adds the
file and line), so that ``skip_invalid`` can count it; a file that cannot be read at all raises.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any, Iterator

from bayesrm.data.errors import DataError


def records(path: Path, path_str: str, split: str | None) -> tuple[Iterator[tuple[int, Any]], bool]:
    """(iterator of (1-based line or record number, record), whether numbers are record numbers)."""
    if not path.exists():
        raise DataError("unreadable", "cannot read: no such file or directory", file=path_str)
    if path.is_dir():
        return _dataset_records(path, path_str, split), True
    if split is not None:
        raise ValueError(f"split={split!r} applies to a saved datasets directory, not to the file {path_str}")
    name = path.name.lower()
    gz = name.endswith(".gz")
    stem = name[:-3] if gz else name
    opener = gzip.open if gz else open
    if stem.endswith((".jsonl", ".ndjson")):
        return _jsonl_records(path, opener), False
    if stem.endswith(".json"):
        return _json_records(path, path_str, opener), True
    if stem.endswith((".parquet", ".pq")) and not gz:
        return _parquet_records(path, path_str), True
    raise DataError(
        "unknown format",
        "unknown file type; expected .jsonl, .jsonl.gz, .json, .json.gz, .parquet or a saved datasets directory",
        file=path_str,
    )


def _jsonl_records(path: Path, opener: Any) -> Iterator[tuple[int, Any]]:
    with opener(path, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                yield n, _loads(raw)
            except DataError as err:
                yield n, err


def _json_records(path: Path, path_str: str, opener: Any) -> Iterator[tuple[int, Any]]:
    with opener(path, "rb") as fh:
        raw = fh.read()
    try:
        data = _loads(raw)
    except DataError as err:
        raise DataError(err.reason, err.detail, file=path_str, line=err.line) from None
    if not isinstance(data, list):
        raise DataError("wrong type", f"expected a JSON list of records, got {type(data).__name__}", file=path_str)
    yield from enumerate(data, 1)


def _loads(raw: bytes) -> Any:
    """json.loads with every failure as DataError("malformed JSON") (``line`` set to the JSON text's own
    line for syntax errors): bad syntax, invalid UTF-8, nesting too deep for the parser, or an integer
    literal too long to convert."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as err:
        raise DataError("malformed JSON", f"malformed JSON: {err.msg} at column {err.colno}", line=err.lineno) from None
    except UnicodeDecodeError as err:
        raise DataError("malformed JSON", f"malformed JSON: invalid UTF-8 ({err.reason})") from None
    except RecursionError:
        raise DataError("malformed JSON", "malformed JSON: nested too deeply to parse") from None
    except ValueError as err:  # e.g. an integer literal over Python's 4300-digit limit
        raise DataError("malformed JSON", f"malformed JSON: {err}") from None


def _parquet_records(path: Path, path_str: str) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        reader = pq.ParquetFile(path)
    except pa.ArrowException as err:
        raise DataError("unreadable", f"cannot read as Parquet: {err}", file=path_str) from None
    n = 0
    try:
        for batch in reader.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                n += 1
                yield n, row
    except (pa.ArrowException, UnicodeDecodeError) as err:  # damaged pages, strings that are not UTF-8
        raise DataError("unreadable", f"cannot read as Parquet after record {n}: {err}", file=path_str) from None


def _dataset_records(path: Path, path_str: str, split: str | None) -> Iterator[tuple[int, Any]]:
    import datasets
    import pyarrow as pa

    damaged = (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError, pa.ArrowException)

    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as err:
        raise DataError("unreadable", f"not a saved Hugging Face dataset directory ({err})", file=path_str) from None
    except damaged as err:  # a damaged or empty save: datasets fails in many ways
        raise DataError("unreadable", f"cannot read as a saved Hugging Face dataset ({type(err).__name__}: {err})",
                        file=path_str) from None
    if isinstance(ds, datasets.DatasetDict):
        name = split or "train"
        if name not in ds:
            raise DataError("unknown split", f"no split {name!r}; available splits: {', '.join(ds)}", file=path_str)
        ds = ds[name]
    elif split is not None:
        raise DataError("unknown split", f"split={split!r} given, but the dataset has no splits", file=path_str)
    n = 0
    try:
        for n, row in enumerate(ds, 1):
            yield n, row
    except damaged as err:
        raise DataError("unreadable", f"cannot read record {n + 1} ({type(err).__name__}: {err})", file=path_str) from None
