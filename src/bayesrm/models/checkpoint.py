"""Hugging Face-shaped checkpoints: ``config.json`` beside ``model.safetensors``.

Every saved bayesrm object (reward model, ensemble, posterior) goes through here, so they share
one format, atomic writes (a crash never leaves a half-written directory that looks complete)
and one set of clear errors. Weights are read with safetensors only; nothing is unpickled.

Integrity (format_version 2): config.json records the SHA-256 of ``model.safetensors``
(``weights_sha256``), and the safetensors header records the SHA-256 of the config
(``bayesrm_config_sha256``), so a bit flip in the weights or an edit of config.json is an error
naming the file. Floating-point weights must be finite. Checkpoints written before version 2
carry no checksums and load without that check.

Loading never lets the checkpoint decide anything about the machine it is loaded on: the caller
chooses ``trust_remote_code`` (see ``bayesrm.registry.load_scorer``), and a path read from a
checkpoint (a sub-checkpoint, or the files themselves through symlinks) must stay inside the
checkpoint directory unless the caller passes ``allow_external_paths=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_bytes
from safetensors.torch import save_file

from bayesrm.config import field_types, from_mapping

FORMAT_VERSION = 2
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CONFIG_HASH_KEY = "bayesrm_config_sha256"
"""Key of the config's SHA-256 in the safetensors header metadata."""
STAGING_PREFIX = ".bayesrm-staging-"
"""Name prefix of the directory a checkpoint is written into before it is renamed into place."""
BACKUP_PREFIX = ".bayesrm-replaced-"
"""Name prefix of the temporary copy of a checkpoint being replaced (the only thing save_checkpoint deletes)."""


class CheckpointError(ValueError):
    """A checkpoint directory that is missing, corrupt, or does not match what loads it."""


def _canonical_sha256(header: dict[str, Any]) -> str:
    body = {k: v for k, v in header.items() if k != "weights_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def is_checkpoint_dir(directory: Path) -> bool:
    """True when ``directory`` holds a config.json with a ``bayesrm_kind`` (i.e. bayesrm wrote it)."""
    try:
        meta = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "bayesrm_kind" in meta


def save_checkpoint(
    directory: str | Path,
    kind: str,
    meta: dict[str, Any],
    tensors: dict[str, torch.Tensor],
    backbone_fingerprint: dict[str, Any] | None = None,
    extra: Callable[[Path], None] | None = None,
) -> None:
    """Write config.json (kind, format version, meta, checksums) and model.safetensors atomically.

    ``extra(staging_dir)`` writes what else belongs in the checkpoint (sub-checkpoints such as
    ensemble members), so the whole tree appears at once or not at all. An existing checkpoint at
    ``directory`` is replaced; an existing directory that is not a bayesrm checkpoint and is not
    empty is refused (its files are never deleted).
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise CheckpointError(f"{directory}: exists and is not a directory; refusing to replace it with a checkpoint")
    if directory.is_dir() and any(directory.iterdir()) and not is_checkpoint_dir(directory):
        raise CheckpointError(f"{directory}: holds files that are not a bayesrm checkpoint; refusing to replace them "
                              "(choose another directory or remove it yourself)")
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{directory.name}.", dir=directory.parent))
    tmp.chmod(0o755)
    try:
        header = json.loads(json.dumps({"bayesrm_kind": kind, "format_version": FORMAT_VERSION, **meta}))
        if backbone_fingerprint is not None:
            header["backbone_fingerprint"] = json.loads(json.dumps(backbone_fingerprint))
        contiguous = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
        weights = tmp / WEIGHTS_NAME
        save_file(contiguous, str(weights), metadata={"bayesrm_kind": kind, CONFIG_HASH_KEY: _canonical_sha256(header)})
        header["weights_sha256"] = hashlib.sha256(weights.read_bytes()).hexdigest()
        (tmp / CONFIG_NAME).write_text(json.dumps(header, indent=2, sort_keys=True), encoding="utf-8")
        if extra is not None:
            extra(tmp)
        if directory.exists():
            # Move the old checkpoint aside under a fresh name that only we created, then delete that.
            backup = Path(tempfile.mkdtemp(prefix=BACKUP_PREFIX + directory.name + ".", dir=directory.parent))
            os.replace(directory, backup / "old")
            os.replace(tmp, directory)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def confined_path(directory: str | Path, relative: str | Path, where: str, allow_external: bool = False) -> Path:
    """``directory / relative``, refused when it resolves outside ``directory`` (``..``, absolute, symlinks)."""
    directory = Path(directory)
    if not isinstance(relative, (str, Path)) or not str(relative):
        raise CheckpointError(f"{where}: expected a relative path, got {relative!r}")
    path = directory / relative
    if allow_external:
        return path
    root, target = directory.resolve(), path.resolve()
    if target != root and root not in target.parents:
        raise CheckpointError(
            f"{where}: path {str(relative)!r} points outside the checkpoint directory {directory} "
            "(pass allow_external_paths=True / --allow-external-paths if you trust this checkpoint)"
        )
    return path


def read_meta(directory: str | Path, allow_external_paths: bool = False) -> dict[str, Any]:
    """The parsed config.json of a checkpoint, with clear errors naming the file and field."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CheckpointError(f"{directory}: no such checkpoint directory")
    config_path = confined_path(directory, CONFIG_NAME, str(directory), allow_external_paths)
    if not config_path.is_file():
        raise CheckpointError(f"{config_path}: missing; not a bayesrm checkpoint")
    try:
        meta = json.loads(config_path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{config_path}: not valid UTF-8 (byte {err.start}); the file is corrupt") from err
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{config_path}: corrupt JSON at line {err.lineno}: {err.msg}") from err
    except (OSError, RecursionError) as err:
        raise CheckpointError(f"{config_path}: unreadable ({err})") from err
    if not isinstance(meta, dict) or "bayesrm_kind" not in meta:
        raise CheckpointError(f"{config_path}: field 'bayesrm_kind' missing; not a bayesrm checkpoint")
    if not isinstance(meta["bayesrm_kind"], str):
        raise CheckpointError(f"{config_path}: field 'bayesrm_kind' must be a string, got {type(meta['bayesrm_kind']).__name__}")
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(f"{config_path}: field 'format_version' must be a positive integer, got {version!r}")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{config_path}: format_version {version} is newer than this bayesrm reads ({FORMAT_VERSION})")
    for key, typ in (("backbone_fingerprint", dict), ("weights_sha256", str)):
        if key in meta and not isinstance(meta[key], typ):
            raise CheckpointError(f"{config_path}: field {key!r} must be a {typ.__name__}, got {type(meta[key]).__name__}")
    if version >= 2 and "weights_sha256" not in meta:
        raise CheckpointError(f"{config_path}: field 'weights_sha256' missing (format_version {version} records one)")
    return meta


def load_checkpoint(
    directory: str | Path, kind: str | None = None, allow_external_paths: bool = False
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(meta, tensors) of a checkpoint; checks its kind, checksums and that every weight is finite."""
    directory = Path(directory)
    meta = read_meta(directory, allow_external_paths)
    config_path = directory / CONFIG_NAME
    if kind is not None and meta["bayesrm_kind"] != kind:
        raise CheckpointError(f"{config_path}: holds a {meta['bayesrm_kind']!r}, expected a {kind!r}")
    weights = confined_path(directory, WEIGHTS_NAME, str(directory), allow_external_paths)
    if not weights.is_file():
        raise CheckpointError(f"{weights}: missing")
    try:
        raw = weights.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{weights}: unreadable ({err.strerror})") from err
    expected = meta.get("weights_sha256")
    if expected is not None and hashlib.sha256(raw).hexdigest() != expected:
        raise CheckpointError(f"{weights}: SHA-256 does not match the one recorded in {config_path}; "
                              "the weights are corrupt (truncated or modified) or belong to another checkpoint")
    try:
        tensors = load_bytes(raw)
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{weights}: corrupt or unreadable safetensors file ({err})") from err
    if expected is not None:
        stored = _header_metadata(raw).get(CONFIG_HASH_KEY)
        if stored != _canonical_sha256(meta):
            raise CheckpointError(f"{config_path}: edited after saving (its content no longer matches the checksum "
                                  f"stored in {weights.name}); re-save the model instead of editing config.json")
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{weights}: tensor {name} holds NaN or infinite values; refusing to load it")
    return meta, tensors


def update_meta(directory: str | Path, **fields: Any) -> None:
    """Add or replace top-level fields of a saved checkpoint's config.json.

    The checkpoint is verified, then rewritten atomically with fresh checksums (weights and any
    sub-checkpoints unchanged), so a deliberate update is never mistaken for a corrupting edit.
    """
    directory = Path(directory)
    meta, tensors = load_checkpoint(directory)
    kind = meta.pop("bayesrm_kind")
    for key in ("format_version", "weights_sha256"):
        meta.pop(key, None)
    fingerprint = meta.pop("backbone_fingerprint", None)
    meta.update(fields)

    def keep_the_rest(staging: Path) -> None:
        for entry in directory.iterdir():
            if entry.name not in (CONFIG_NAME, WEIGHTS_NAME) and not entry.name.startswith("."):
                (shutil.copytree if entry.is_dir() else shutil.copy2)(entry, staging / entry.name)

    save_checkpoint(directory, kind, meta, tensors, fingerprint, extra=keep_the_rest)


def _header_metadata(raw: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file's JSON header (already validated by safetensors)."""
    size = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + size]).get("__metadata__") or {}


# ---- typed config sections ------------------------------------------------------------------
def config_from_meta(cls: type, data: Any, where: str, exact: bool = False) -> Any:
    """A dataclass config from a checkpoint's JSON section, checked by :func:`bayesrm.config.from_mapping`
    (the one typed conversion: keys, types, the class's own checks); errors are CheckpointErrors naming ``where``,
    e.g. ``m/config.json: model.lora_r: expected int, got str ('8')``. ``exact``: every field must be there
    (sections saved whole, with no older spelling to read), else a missing one is a CheckpointError too."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{where}: expected an object, got {type(data).__name__}")
    missing = [name for name in field_types(cls) if name not in data] if exact else []
    if missing:
        raise CheckpointError(f"{where}: missing key {missing[0]!r}")
    try:
        return from_mapping(cls, data, where)
    except ValueError as err:
        raise CheckpointError(str(err)) from err
