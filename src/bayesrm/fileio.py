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
    tmp.write_text(text)
    os.replace(tmp, path)


def read_yaml_mapping(path: str | Path, what: str = "config") -> dict[str, Any]:
    """A YAML file that must hold a mapping; errors name the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as err:
        raise FileNotFoundError(f"{path}: cannot read {what} ({err.strerror})") from err
    except yaml.YAMLError as err:
        raise ValueError(f"{path}: invalid YAML ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a {what} file must be a mapping of key: value")
    return data
