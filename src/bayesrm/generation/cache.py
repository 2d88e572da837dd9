"""On-disk cache of sampled responses, so no response is generated twice.

Layout: ``<cache_dir>/<model slug>-<weights fingerprint>/<settings hash>.jsonl`` with a
``<settings hash>.json`` beside it recording the settings. Each JSONL line is one sample,
``{"prompt": key, "index": i, "text": ..., "num_tokens": k, "finished": bool}``, appended and
flushed after every batch: an interrupted run resumes where it stopped, and asking for more
samples per prompt only generates the missing indices. A last line cut short by a crash is
dropped on the next load; any other corrupt line (bad JSON, invalid UTF-8, a wrong field) is
skipped, counted in ``SampleCache.dropped`` and logged with the file and line, so that only its
sample is generated again and the good samples around it are kept; the next write rewrites the file
without the corrupt lines (atomically, under the writers' lock).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

try:  # POSIX advisory locks keep concurrent writers' lines whole
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


logger = logging.getLogger(__name__)


class CacheError(ValueError):
    """A cache file that cannot be read at all (names the file)."""


def _parse_line(line: bytes) -> tuple[tuple[str, int], "Sample"]:
    """(key, sample) of one cache line; ValueError saying what is wrong with it."""
    try:
        rec = json.loads(line.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ValueError(f"invalid UTF-8: {err.reason}") from None
    except RecursionError:
        raise ValueError("invalid JSON: nested too deeply") from None
    except ValueError as err:  # JSONDecodeError, over-long integers
        raise ValueError(f"invalid JSON: {getattr(err, 'msg', err)}") from None
    if not isinstance(rec, dict):
        raise ValueError(f"expected an object, got {type(rec).__name__}")
    types = {"prompt": str, "index": int, "text": str, "num_tokens": int, "finished": bool}
    for name, kind in types.items():
        value = rec.get(name)
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 0)):
            raise ValueError(f"field {name!r}: expected {'a non-negative integer' if kind is int else kind.__name__}, "
                             f"got {value!r:.40}")
    return (rec["prompt"], rec["index"]), Sample(text=rec["text"], num_tokens=rec["num_tokens"], finished=rec["finished"])


@dataclass(frozen=True)
class Sample:
    """One cached response: its text, its length in policy tokens (without EOS), and whether EOS ended it."""

    text: str
    num_tokens: int
    finished: bool


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hex digest of the canonical JSON form of ``obj`` (same value -> same hash, across runs)."""
    data = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()
    return hashlib.blake2b(data, digest_size=16).hexdigest()[:length]


def slugify(name: str) -> str:
    """A file-name-safe form of a model id or path."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._")[-80:] or "model"


class SampleCache:
    """Samples keyed by (prompt key, sample index); persisted to a JSONL file when ``path`` is set."""

    def __init__(self, path: str | Path | None, settings: dict[str, Any] | None = None):
        self.path = Path(path) if path is not None else None
        self._entries: dict[tuple[str, int], Sample] = {}
        self.dropped: list[tuple[int, str]] = []
        """(line number, reason) of each corrupt line skipped on load (a torn last line is not counted); emptied
        when the next write compacts the file."""
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if settings is not None:
            meta = self.path.with_suffix(".json")
            if not meta.exists():
                tmp = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
                tmp.write_text(json.dumps(settings, indent=2, sort_keys=True))
                os.replace(tmp, meta)
        if self.path.exists():
            self._load()

    @classmethod
    def for_model(
        cls, cache_dir: str | Path, model_id: str, fingerprint: str, settings: dict[str, Any]
    ) -> "SampleCache":
        """The cache file of one (model, weights fingerprint, sampling settings) combination."""
        directory = Path(cache_dir) / f"{slugify(model_id)}-{fingerprint[:16]}"
        return cls(directory / f"{stable_hash(settings)}.jsonl", settings)

    def _load(self) -> None:
        assert self.path is not None
        try:
            raw = self.path.read_bytes()
        except OSError as err:
            raise CacheError(f"{self.path}: cannot read the sample cache ({err.strerror})") from err
        if raw and not raw.endswith(b"\n"):  # a write cut short by a crash: drop the partial line
            raw = raw[: raw.rfind(b"\n") + 1]
            with open(self.path, "r+b") as f:
                f.truncate(len(raw))
        for lineno, line in enumerate(raw.split(b"\n"), start=1):
            if not line.strip():
                continue
            try:
                key, sample = _parse_line(line)
            except ValueError as err:  # the record is dropped; its sample is generated again
                self.dropped.append((lineno, str(err)))
                continue
            self._entries[key] = sample
        if self.dropped:
            where = ", ".join(f"line {n} ({why})" for n, why in self.dropped[:3])
            more = f" and {len(self.dropped) - 3} more" if len(self.dropped) > 3 else ""
            logger.warning("%s: dropped %d corrupt cache line(s): %s%s; their samples will be generated again",
                           self.path, len(self.dropped), where, more)

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._entries

    def __getitem__(self, key: tuple[str, int]) -> Sample:
        return self._entries[key]

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, items: Iterable[tuple[tuple[str, int], Sample]]) -> None:
        """Record samples and append them to the file in one flushed, fsynced write."""
        items = list(items)
        self._entries.update(items)
        if self.path is None or not items:
            return
        lines = "".join(
            json.dumps({"prompt": p, "index": i, **asdict(s)}, ensure_ascii=False) + "\n" for (p, i), s in items
        )
        with open(self.path, "a", encoding="utf-8") as f:
            if fcntl is not None:
                fcntl.flock(f, fcntl.LOCK_EX)
            if self.dropped:  # the first write after a load that skipped corrupt lines also drops them from the file
                self._compact(lines)
                return
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())

    def _compact(self, new_lines: str) -> None:
        """Rewrite the file atomically: its valid lines as they are (also those other writers appended since
        the load), then ``new_lines``; corrupt and torn lines are left out. Called holding the writers' lock."""
        assert self.path is not None
        raw = self.path.read_bytes()
        kept = []
        for line in raw[: raw.rfind(b"\n") + 1].split(b"\n"):
            try:
                _parse_line(line)
            except ValueError:
                continue
            kept.append(line + b"\n")
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as out:
            out.write(b"".join(kept) + new_lines.encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.path)
        logger.info("%s: compacted, %d corrupt line(s) removed", self.path, len(self.dropped))
        self.dropped = []
