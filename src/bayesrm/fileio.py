"""Small file helpers shared across the package: atomic writes and YAML mappings with clear errors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text so that readers see the old file or the new one, never half of it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """A YAML file that must hold a mapping; errors name the file."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise FileNotFoundError(f"{path}: cannot read {what} ({err.strerror})") from err
    try:
        text = raw.decode("utf-8-sig")  # a leading byte-order mark is dropped
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{path}:{line}: invalid UTF-8 ({err.reason}) in the {what} file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ValueError(f"{where}: invalid YAML ({' '.join(str(err).split())})") from None
    except RecursionError:
        raise ValueError(f"{path}: invalid YAML (nested too deeply to parse)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a {what} file must be a mapping of key: value, got {type(data).__name__}")
    return data
