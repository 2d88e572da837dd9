"""Hugging Face-shaped checkpoints: ``config.json`` beside ``model.safetensors``.

Every saved bayesrm object (reward model, ensemble, posterior) goes through here, so they share
one format, atomic writes (a crash never leaves a half-written directory that looks complete)
and one set of clear errors. Weights are read with safetensors only; nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

FORMAT_VERSION = 1
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, corrupt, or does not match what loads it."""


def save_checkpoint(
    directory: str | Path,
    kind: str,
    meta: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    backbone_fingerprint: dict[str, Any] | None = None,
) -> None:
    """Write config.json (kind, format version, meta) and model.safetensors atomically."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    tmp.chmod(0o755)
    try:
        header = {"bayesrm_kind": kind, "format_version": FORMAT_VERSION, **meta}
        if backbone_fingerprint is not None:
            header["backbone_fingerprint"] = backbone_fingerprint
        (tmp / CONFIG_NAME).write_text(json.dumps(header, indent=2, sort_keys=True))
        contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        save_file(contiguous, str(tmp / WEIGHTS_NAME), metadata={"bayesrm_kind": kind})
        if directory.exists():
            backup = directory.with_name(directory.name + ".old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(directory, backup)
            os.replace(tmp, directory)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_meta(directory: str | Path) -> dict[str, Any]:
    """The parsed config.json of a checkpoint, with clear errors."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint directory")
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: missing; not a bayesrm checkpoint")
    try:
        meta = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_path}: corrupt JSON at line {err.lineno}: {err.msg}") from err
    if not isinstance(meta, dict) or "bayesrm_kind" not in meta:
        raise CheckpointError(f"{config_path}: field 'bayesrm_kind' missing; not a bayesrm checkpoint")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(f"{config_path}: format_version {meta['format_version']} is newer than this bayesrm reads")
    return meta


def load_checkpoint(directory: str | Path, kind: str | None = None) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(meta, tensors) of a checkpoint; checks its kind when one is expected."""
    directory = Path(directory)
    meta = read_meta(directory)
    if kind is not None and meta["bayesrm_kind"] != kind:
        raise CheckpointError(f"{directory}: holds a {meta['bayesrm_kind']!r}, expected a {kind!r}")
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights}: corrupt or unreadable safetensors file ({err})") from err
    return meta, tensors


def update_meta(directory: str | Path, **fields: Any) -> None:
    """Add or replace top-level fields of a saved checkpoint's config.json (atomically; weights untouched)."""
    directory = Path(directory)
    meta = read_meta(directory)
    meta.update(fields)
    path = directory / CONFIG_NAME
    tmp = path.with_name(f".{CONFIG_NAME}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    os.replace(tmp, path)
