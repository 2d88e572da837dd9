"""Fingerprints of cached stages, so a rerun never reuses an output made with other settings.

Every cached stage of a run (``bayesrm bon``'s prompts, pairs, proxies, scores) records, in
``OUT/stages.json``, a fingerprint: the SHA-256 of the settings it depends on plus the
fingerprints of the stages it reads. A rerun reuses a stage's output only when its fingerprint is
unchanged. When it changed, the run stops with a message naming the stage and the changed
settings, unless the caller passed ``overwrite=True`` (``--overwrite``): then that stage, and
through the fingerprints everything downstream of it, is redone.

Crash safety: the record is written (atomically) *before* the stage's output, and an outdated
output is deleted before it is redone, so an output present on disk is always the one its record
describes; a record whose output is missing means the stage was interrupted and is simply redone.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Iterable

from bayesrm.fileio import atomic_write_text

RECORD_NAME = "stages.json"


class StaleOutputError(ValueError):
    """An output directory holding results made with settings other than the ones asked for."""


def canonical(value: Any) -> Any:
    """A JSON-able, key-sorted copy of ``value`` (tuples become lists)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def fingerprint(settings: dict[str, Any], upstream: Iterable[str] = ()) -> str:
    """SHA-256 of the settings and the upstream fingerprints (order of the upstream list matters)."""
    body = json.dumps({"settings": canonical(settings), "upstream": list(upstream)}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def changed_keys(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths at which two nested settings differ, e.g. ['training.learning_rate']."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(path)
            else:
                out += changed_keys(old[key], new[key], path)
        return out
    return [] if old == new else [prefix or "(value)"]


def safe_name(name: Any, what: str) -> str:
    """``name`` when it is usable as one file or directory name; otherwise a ValueError naming ``what``."""
    text = str(name)
    bad = not text or text in {".", ".."} or any(c in text for c in "/\\\0") or text != text.strip() or text.startswith(".")
    if bad or any(ord(c) < 32 for c in text):
        raise ValueError(f"{what} {text!r} cannot be used as a file name (no path separators, no leading '.', "
                         "no control characters): choose a plain name such as 'map' or 'ens-5'")
    return text


class StageRecords:
    """The fingerprints of one output directory's stages, stored in ``OUT/stages.json``."""

    def __init__(self, out: str | Path, overwrite: bool = False, run_kind: str = "bon"):
        self.out = Path(out)
        self.path = self.out / RECORD_NAME
        self.overwrite = overwrite
        self.run_kind = run_kind
        self.records: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (ValueError, OSError) as err:
                raise StaleOutputError(f"{self.path}: unreadable stage record ({err}); pass --overwrite to redo the run") from err
            if not isinstance(data, dict) or data.get("run") != run_kind or not isinstance(data.get("stages"), dict):
                raise StaleOutputError(f"{self.path}: not a record of a bayesrm {run_kind} run")
            self.records = data["stages"]
        elif self.out.is_dir() and any(p.name != "samples" for p in self.out.iterdir()) and not overwrite:
            raise StaleOutputError(
                f"{self.out}: not empty and holds no {RECORD_NAME} (another kind of run, or one made before bayesrm "
                "recorded stage settings); choose another --out, or pass --overwrite to redo every stage in it "
                "(files bayesrm did not write are left alone)")
        self.out.mkdir(parents=True, exist_ok=True)
        self._save()

    def _save(self) -> None:
        atomic_write_text(self.path, json.dumps({"run": self.run_kind, "stages": self.records}, indent=1, sort_keys=True))

    def fresh(
        self, name: str, settings: dict[str, Any], upstream: Iterable[str], outputs: Iterable[Path],
        cleanup: Iterable[Path] | None = None,
    ) -> tuple[str, bool]:
        """(fingerprint, True) when the stage's ``outputs`` exist and were made with these settings.

        Otherwise the stage must run: its stale outputs (``cleanup``, default ``outputs``) are
        deleted (only with overwrite, else StaleOutputError), the new fingerprint is recorded
        and (fingerprint, False) returned.
        """
        upstream = list(upstream)
        fp = fingerprint(settings, upstream)
        outputs = [Path(p) for p in outputs]
        cleanup = outputs if cleanup is None else [Path(p) for p in cleanup]
        present = [p for p in cleanup if p.exists()]
        record = self.records.get(name)
        if record is not None and record.get("fingerprint") == fp:
            if all(p.exists() for p in outputs):
                return fp, True
        elif any(p.exists() for p in outputs) and not self.overwrite:
            if record is None:
                why = "has no recorded settings"
            else:
                diff = changed_keys(record.get("settings"), canonical(settings))
                why = ("was made with other settings: changed " + ", ".join(diff)) if diff else "depends on a stage that changed"
            raise StaleOutputError(
                f"{self.out}: stage '{name}' {why}. Pass --overwrite to redo it (and what depends on it), "
                "or choose another --out")
        for p in present:  # stale or half-made outputs of our own stage
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        self.records[name] = {"fingerprint": fp, "settings": canonical(settings), "upstream": upstream}
        self._save()
        return fp, False

    def fingerprint_of(self, name: str) -> str:
        return self.records[name]["fingerprint"]


def judge_identity(judge: Any) -> dict[str, Any]:
    """What identifies a gold judge's scores: its name, and for a saved reward model its weights' SHA-256."""
    from bayesrm.models.checkpoint import CheckpointError, read_meta

    out: dict[str, Any] = {"name": getattr(judge, "name", type(judge).__name__)}
    path = getattr(judge, "path", None)
    if path is not None:
        try:
            out["weights_sha256"] = read_meta(path).get("weights_sha256")
        except CheckpointError:
            pass
    return out


def claim_run(
    out: str | Path, kind: str, settings: dict[str, Any], overwrite: bool = False, resume: bool = False,
    cleanup: Iterable[Path] = (),
) -> bool:
    """Take ``out`` for one run of ``kind`` with these settings; True when an earlier run is to be resumed.

    An empty or new ``out`` is taken. One holding a run of the same settings needs ``resume`` (continue
    it) or ``overwrite`` (start over: the ``cleanup`` outputs, all written by bayesrm, are deleted first).
    One holding a run of other settings is refused even with ``resume``; ``overwrite`` starts over.
    A non-empty directory with no record is refused unless ``overwrite`` (and its files are kept);
    ``resume`` with nothing to resume starts the run.
    """
    out = Path(out)
    records = StageRecords(out, overwrite=overwrite, run_kind=kind)
    fp = fingerprint(settings)
    old = records.records.get("run")
    if old is not None and not overwrite:
        if old.get("fingerprint") != fp:
            diff = ", ".join(changed_keys(old.get("settings"), canonical(settings))) or "(unknown)"
            raise StaleOutputError(f"{out}: holds a {kind} run with other settings (changed: {diff}); it cannot be "
                                   "resumed with these. Pass --overwrite to start over, or choose another --out")
        if resume:
            return True
        raise StaleOutputError(f"{out}: already holds this {kind} run; pass --resume to continue it (from its last "
                               "checkpoint) or --overwrite to start over, or choose another --out")
    for p in cleanup:
        p = Path(p)
        if p.exists():
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    records.records = {"run": {"fingerprint": fp, "settings": canonical(settings)}}
    records._save()
    return False
