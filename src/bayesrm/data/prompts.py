"""Prompts for best-of-n and RL: real chat messages (embedded) or the user's own prompt files.

``chitchat_prompts`` draws from the Chit Chat Challenge dataset (package ``chitchat-dataset``,
MIT, about 258k messages of real two-person chats): each message (its utterances joined by a
space) is cleaned, filtered by length, de-duplicated case-insensitively, and shuffled with a seed;
``n`` prompts are the first n of that order, so a larger n extends a smaller one.
``load_prompts`` reads a JSONL, JSON or TXT file with errors that name the file, line and field.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import random
import re
from pathlib import Path
from typing import Any

from bayesrm.data.errors import DataError

PROMPT_FIELDS = ("prompt", "instruction", "question", "text")
"""Fields tried, in order, when a JSONL/JSON prompt file's field is not given."""

_URL = re.compile(r"https?://|www\.", re.IGNORECASE)
_LETTER = re.compile(r"[A-Za-z]")


def _chitchat_path() -> Path:
    spec = importlib.util.find_spec("chitchat_dataset")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("missing package", "chat prompts need the package chitchat-dataset: pip install chitchat-dataset==0.9.0")
    return Path(list(spec.submodule_search_locations)[0]) / "dataset.json"


def _keep(text: str, min_words: int, max_words: int) -> bool:
    words = len(text.split())
    return min_words <= words <= max_words and _LETTER.search(text) is not None and _URL.search(text) is None


@functools.lru_cache(maxsize=8)
def _chitchat_pool(min_words: int, max_words: int, questions_only: bool) -> tuple[str, ...]:
    """Cleaned, filtered, de-duplicated messages in dataset order."""
    with open(_chitchat_path(), encoding="utf-8") as f:
        conversations = json.load(f)
    seen: set[str] = set()
    pool: list[str] = []
    for conversation in conversations.values():
        for message in conversation["messages"]:
            text = " ".join(" ".join(u["text"] for u in message).split())  # utterances joined, whitespace collapsed
            if questions_only and not text.endswith("?"):
                continue
            key = text.lower()
            if key in seen or not _keep(text, min_words, max_words):
                continue
            seen.add(key)
            pool.append(text)
    return tuple(pool)


def chitchat_prompts(
    n: int, seed: int = 0, min_words: int = 4, max_words: int = 30, questions_only: bool = False
) -> list[str]:
    """n distinct real chat messages, seeded; the same seed gives a prefix-consistent order.

    Kept: min_words <= words <= max_words, at least one letter, no URL; ``questions_only`` keeps
    messages ending in '?'. Duplicates (case-insensitive) are dropped.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 1 <= min_words <= max_words:
        raise ValueError(f"need 1 <= min_words <= max_words, got min_words={min_words}, max_words={max_words}")
    pool = list(_chitchat_pool(min_words, max_words, questions_only))
    if n > len(pool):
        raise ValueError(f"asked for {n} chat prompts but only {len(pool)} pass the filters")
    random.Random(seed).shuffle(pool)
    return pool[:n]


def _pick(item: Any, field: str | None, **loc: Any) -> str:
    """The prompt text of one record (a string, or an object with the prompt field); loc locates it for errors."""
    if isinstance(item, str):
        if field is not None:
            raise DataError("not an object", f"expected an object with field {field!r}, got a string", **loc)
        value, name = item, None
    elif isinstance(item, dict):
        name = field or next((f for f in PROMPT_FIELDS if f in item), None)
        if name is None:
            raise DataError(
                "missing field", f"no prompt field; pass field= (tried {list(PROMPT_FIELDS)}, found {sorted(item)[:8]})",
                **loc,
            )
        if name not in item:
            raise DataError("missing field", "missing", **loc, field=name)
        value = item[name]
    else:
        raise DataError("not an object", f"expected a string or an object, got {type(item).__name__}", **loc)
    if not isinstance(value, str):
        raise DataError("not a string", f"expected a string, got {type(value).__name__}", **loc, field=name)
    _check_unicode(value, name, **loc)
    if not value.strip():
        raise DataError("empty string", "empty prompt", **loc, field=name)
    return value


def _check_unicode(value: str, name: str | None, **loc: Any) -> None:
    """Reject a lone UTF-16 surrogate (a JSON escape such as ``"\\ud800"``): no tokenizer encodes it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise DataError("invalid unicode", f"lone surrogate {value[err.start]!r} at character {err.start} "
                        "(not valid Unicode text)", **loc, field=name) from None


def _json(text: str, **loc: Any) -> Any:
    """json.loads with every failure (bad syntax, nesting too deep, an over-long integer) as DataError."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        loc.setdefault("line", err.lineno)
        raise DataError("invalid JSON", f"invalid JSON ({err.msg})", **loc) from None
    except RecursionError:
        raise DataError("invalid JSON", "invalid JSON (nested too deeply to parse)", **loc) from None
    except ValueError as err:
        raise DataError("invalid JSON", f"invalid JSON ({err})", **loc) from None


def load_prompts(path: str | Path, field: str | None = None) -> list[str]:
    """Prompts from a file, in file order.

    .jsonl: one JSON object (or string) per line; the prompt is ``field``, else the first of
    PROMPT_FIELDS present. .json: a list of such records. Other suffixes (.txt): one prompt per
    non-empty line. Blank lines are skipped; anything else malformed raises DataError (file:line).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such file", "no such prompt file", file=path)
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte-order mark, as some editors write
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError("invalid UTF-8", f"invalid UTF-8 ({err.reason}) at byte {err.start}", file=path, line=line) from None
    if path.suffix == ".json":
        records = _json(text, file=path)
        if not isinstance(records, list):
            raise DataError("not a list", "a .json prompt file must hold a list of prompts", file=path)
        prompts = [_pick(r, field, file=path, line=i, record=True) for i, r in enumerate(records, start=1)]
    elif path.suffix == ".jsonl":
        prompts = []
        for lineno, line in enumerate(text.split("\n"), start=1):
            if not line.strip():
                continue
            record = _json(line, file=path, line=lineno)
            prompts.append(_pick(record, field, file=path, line=lineno))
    else:
        if field is not None:
            raise DataError("field on text file", f"field={field!r} given, but {path.suffix or 'this'} files hold one prompt per line", file=path)
        prompts = [line.strip() for line in text.split("\n") if line.strip()]
    if not prompts:
        raise DataError("no prompts", "no prompts in file", file=path)
    return prompts


def prompt_source(spec: str, seed: int = 0) -> list[str]:
    """Prompts named by a spec: ``chitchat:N`` (N real chat messages, seeded) or a prompt file path."""
    kind, sep, count = spec.partition(":")
    if kind == "chitchat":
        try:
            n = int(count) if sep else 512
        except ValueError:
            raise ValueError(f"prompt source {spec!r}: expected chitchat:N with N a whole number") from None
        return chitchat_prompts(n, seed=seed)
    return load_prompts(spec)
