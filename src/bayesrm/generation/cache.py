"""On-disk cache of sampled responses, so no response is generated twice.

Layout: ``<cache_dir>/<model slug>-<weights fingerprint>/<settings hash>.jsonl`` with a
``<settings hash>.json`` beside it recording the settings. Each JSONL line is one sample,
``{"prompt": key, "index": i, "text": ..., "num_tokens": k, "finished": bool}``, appended and
flushed after every batch: an interrupted run resumes where it stopped, and asking for more
samples per prompt only generates the missing indices. A last line cut short by a crash is
dropped on the next load; any other malformed line is an error naming the file and line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable

try:  # POSIX advisory locks keep concurrent writers' lines whole
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class CacheError(ValueError):
    """A cache file that cannot be read (names the file and line)."""


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
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):  # a write cut short by a crash: drop the partial line
            raw = raw[: raw.rfind(b"\n") + 1]
            with open(self.path, "r+b") as f:
                f.truncate(len(raw))
        for lineno, line in enumerate(raw.decode("utf-8").split("\n"), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                key = (rec["prompt"], int(rec["index"]))
                sample = Sample(text=rec["text"], num_tokens=int(rec["num_tokens"]), finished=bool(rec["finished"]))
            except json.JSONDecodeError as err:
                raise CacheError(f"{self.path}, line {lineno}: invalid JSON ({err.msg}); delete the file to regenerate") from err
            except (KeyError, TypeError, ValueError) as err:
                raise CacheError(f"{self.path}, line {lineno}: bad or missing field ({err!r}); delete the file to regenerate") from err
            self._entries[key] = sample

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
            f.write(lines)
            f.flush()
            os.fsync(f.fileno())
