"""Load pairwise preference data from files into :class:`PreferencePair` records.

Files: JSONL (``.jsonl``, ``.jsonl.gz``), JSON (a list of records, ``.json``), Parquet and a
Hugging Face ``datasets`` directory saved with ``save_to_disk``.

Forms of a record (``format``):

- ``"standard"``: ``prompt, chosen, rejected`` (+ optional ``margin``). The prompt is a string or
  a list of chat messages; chosen / rejected are strings or message lists whose final assistant
  message is the response (TRL's conversational format).
- ``"hh"`` (implicit prompt): no prompt column; chosen and rejected are whole dialogues sharing
  every turn but the last. Native Anthropic HH-RLHF strings (``"\\n\\nHuman: ...\\n\\nAssistant: ..."``)
  are split at the last ``"\\n\\nAssistant:"`` of their common prefix: the prompt is the shared
  dialogue up to and including that marker, the responses are the final assistant turns. Message
  lists are split the same way (prompt = the shared messages, responses = the final ones).
- ``"auto"``: ``"hh"`` when a record has no prompt column and both dialogues contain
  ``"\\n\\nAssistant:"`` (or are both message lists), else ``"standard"``; decided once per file, at the
  first record that settles it.

Every bad record raises :class:`DataError` naming file, line (record number for non-line formats)
and field; with ``skip_invalid=True`` it is skipped and counted by reason instead (a file that
cannot be read, or a JSON file that does not parse, always raises).

Empty responses. Real data has them (PandaLM and UltraFeedback pairs where one model returned
nothing; HH-RLHF harmless-base dialogues whose final assistant turn is empty, a silent reply that
annotators preferred to a harmful one). An empty ``chosen`` / ``rejected`` field is an error by
default, since it is also what a wrong column map looks like; ``allow_empty_responses=True`` keeps
such pairs. In native HH dialogues the field itself holds the whole (non-empty) dialogue, so an
empty final assistant turn is always kept: it is data, not a broken column. Prompts are never empty.
"""

from __future__ import annotations

import math
import os
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

from bayesrm.data import sources
from bayesrm.data.errors import DataError
from bayesrm.data.schema import PreferencePair
from bayesrm.types import Message, Prompt

HH_MARKER = "\n\nAssistant:"
FORMS = ("auto", "standard", "hh")
FIELDS = ("prompt", "chosen", "rejected", "margin")
_ASSETS = Path(__file__).resolve().parent / "assets"
_HH_HARMLESS = "hh-rlhf-harmless-base-test.jsonl.gz"
T = TypeVar("T")


def embedded_hh_harmless_path() -> Path:
    """The HH-RLHF harmless-base test split (2,312 real human preferences, MIT, Anthropic) shipped
    with the package; see ``data/assets/LICENSE-hh-rlhf.md``."""
    path = _ASSETS / _HH_HARMLESS
    if not path.is_file():
        raise FileNotFoundError(f"embedded data missing from the installed package: {path}")
    return path


@dataclass
class LoadResult:
    """Pairs read from one source, and what was skipped (only with ``skip_invalid=True``).

    skip_reasons: skipped records by :attr:`DataError.reason` (e.g. ``"empty string"``).
    form:         the record form used, ``"standard"`` or ``"hh"``.
    """

    pairs: list[PreferencePair]
    skipped: int = 0
    skip_reasons: Counter[str] = field(default_factory=Counter)
    source: str = ""
    form: str = ""

    def __len__(self) -> int:
        return len(self.pairs)

    def summary(self) -> str:
        """One line, e.g. ``2312 pairs from hh.jsonl.gz (hh); skipped 2: 1 empty string, 1 malformed JSON``."""
        line = f"{len(self.pairs)} pairs from {self.source} ({self.form}); skipped {self.skipped}"
        if self.skip_reasons:
            line += ": " + ", ".join(f"{n} {reason}" for reason, n in self.skip_reasons.most_common())
        return line


def load_preferences(
    path: str | Path,
    *,
    format: str = "auto",
    columns: dict[str, str] | None = None,
    skip_invalid: bool = False,
    split: str | None = None,
    limit: int | None = None,
    allow_empty_responses: bool = False,
) -> LoadResult:
    """Read preference pairs from ``path`` (a file or a saved ``datasets`` directory).

    format:       ``"auto"`` | ``"standard"`` | ``"hh"`` (see the module docstring).
    columns:      our field names to the file's, e.g. ``{"prompt": "question", "chosen": "good"}``;
                  fields: prompt, chosen, rejected, margin (optional, a finite number).
    skip_invalid: skip bad records, counting them by reason, instead of raising DataError.
    split:        the split of a saved DatasetDict (default ``"train"``); only for dataset directories.
    limit:        stop after this many valid pairs.
    allow_empty_responses: keep pairs whose chosen or rejected response is empty (see above).
    """
    if format not in FORMS:
        raise DataError("unknown format", f"unknown format {format!r}; expected one of {', '.join(FORMS)}", file=path)
    if limit is not None and limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    cols = _column_map(columns)
    path_str = str(path)
    result = LoadResult(pairs=[], source=path_str)
    form = None if format == "auto" else format

    def parse(record: dict, n: int) -> PreferencePair:
        nonlocal form
        form = form or _detect_form(record, cols)  # settled by the first record that can settle it
        return _parse(record, form or "standard", cols, f"{path_str}:{n}", allow_empty_responses)

    n_read = 0
    for item in _parsed_records(path, split, parse):
        n_read += 1
        if isinstance(item, DataError):
            if not skip_invalid:
                raise item
            result.skipped += 1
            result.skip_reasons[item.reason] += 1
            continue
        result.pairs.append(item)
        if limit is not None and len(result.pairs) >= limit:
            break
    if n_read == 0:
        raise DataError("no records", "no preference records found", file=path_str)
    result.form = form or "standard"
    return result


def read_scoring_records(
    path: str | Path, prompt_field: str = "prompt", response_field: str = "response"
) -> list[dict[str, Any]]:
    """Records to score, from any file type :func:`load_preferences` reads: each must have a prompt
    (non-empty text or chat messages) and a response (a string, possibly empty: an empty generation
    is still scored). Other fields are kept as they are. Raises DataError naming file, line, field."""

    def parse(record: dict, n: int) -> dict[str, Any]:
        prompt = _prompt(_get(record, prompt_field), prompt_field)
        response = _text(_get(record, response_field), response_field, allow_empty=True)
        return {**record, prompt_field: prompt, response_field: response}

    out = []
    for item in _parsed_records(path, None, parse):
        if isinstance(item, DataError):
            raise item
        out.append(item)
    if not out:
        raise DataError("no records", "no records to score", file=path)
    return out


def _parsed_records(path: str | Path, split: str | None, parse: Callable[[dict, int], T]) -> Iterator[T | DataError]:
    """``parse(record, n)`` of each record, or the DataError it raised, located (file, line / record
    number). A file that cannot be read raises DataError("unreadable") instead."""
    path_str = str(path)
    records, is_record = sources.records(Path(path), path_str, split)
    try:
        for n, record in records:
            try:
                if isinstance(record, DataError):
                    raise record
                if not isinstance(record, dict):
                    raise DataError("wrong type", f"expected an object (record), got {type(record).__name__}")
                parsed = parse(record, n)
            except DataError as err:
                yield DataError(err.reason, err.detail, file=path_str, line=n, field=err.field, record=is_record)
                continue
            yield parsed
    except (OSError, EOFError, zlib.error) as err:
        raise DataError("unreadable", f"cannot read: {err}", file=path_str) from err


# ---- record parsing ------------------------------------------------------------------------
def _column_map(columns: dict[str, str] | None) -> dict[str, str]:
    cols = {name: name for name in FIELDS}
    for ours, theirs in (columns or {}).items():
        if ours not in cols:
            raise ValueError(f"unknown field {ours!r} in columns; expected some of {', '.join(FIELDS)}")
        if not isinstance(theirs, str) or not theirs:
            raise ValueError(f"columns[{ours!r}] must be a non-empty column name, got {theirs!r}")
        cols[ours] = theirs
    return cols


def _detect_form(record: dict, cols: dict[str, str]) -> str | None:
    """'standard', 'hh', or None when this record does not settle it (e.g. a field is missing)."""
    if cols["prompt"] in record:
        return "standard"
    chosen, rejected = record.get(cols["chosen"]), record.get(cols["rejected"])
    if isinstance(chosen, str) and isinstance(rejected, str) and HH_MARKER in chosen and HH_MARKER in rejected:
        return "hh"
    if isinstance(chosen, list) and isinstance(rejected, list):
        return "hh"
    return None


def _parse(record: dict, form: str, cols: dict[str, str], source: str, allow_empty: bool) -> PreferencePair:
    margin = _margin(record, cols["margin"])
    if form == "hh":
        prompt, chosen, rejected = _split_dialogues(record, cols["chosen"], cols["rejected"], allow_empty)
    else:
        prompt = _prompt(_get(record, cols["prompt"]), cols["prompt"])
        chosen = _response(_get(record, cols["chosen"]), cols["chosen"], allow_empty)
        rejected = _response(_get(record, cols["rejected"]), cols["rejected"], allow_empty)
    if chosen == rejected:
        raise DataError("identical responses", "chosen and rejected responses are identical", field=cols["chosen"])
    return PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected, margin=margin, source=source)


def _get(record: dict, key: str) -> Any:
    value = record.get(key)
    if value is None:
        raise DataError("missing field", "missing" if key not in record else "missing (null)", field=key)
    return value


def _unicode(value: str, key: str, what: str = "") -> str:
    """value, if it is valid Unicode text: JSON escapes such as ``"\\ud800"`` can produce a lone UTF-16
    surrogate, which no tokenizer encodes."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise DataError("invalid unicode", f"{what}lone surrogate {value[err.start]!r} at character {err.start} "
                        "(not valid Unicode text)", field=key) from None
    return value


def _text(value: Any, key: str, what: str = "", allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise DataError("wrong type", f"{what}expected a string, got {type(value).__name__}", field=key)
    _unicode(value, key, what)
    if not allow_empty and not value.strip():
        raise DataError("empty string", f"{what}empty or whitespace-only string", field=key)
    return value


def _messages(value: list, key: str) -> list[Message]:
    """Validated chat messages ``[{"role": str, "content": str}, ...]`` (other keys dropped)."""
    if not value:
        raise DataError("empty string", "empty message list", field=key)
    out = []
    for i, msg in enumerate(value):
        if not isinstance(msg, dict):
            raise DataError("wrong type", f"message {i}: expected an object, got {type(msg).__name__}", field=key)
        for part in ("role", "content"):
            if msg.get(part) is None:
                raise DataError("missing field", f"message {i}: missing {part!r}", field=key)
            if not isinstance(msg[part], str):
                raise DataError("wrong type", f"message {i}: {part!r} must be a string, "
                                f"got {type(msg[part]).__name__}", field=key)
            _unicode(msg[part], key, f"message {i}: {part!r}: ")
        out.append({"role": msg["role"], "content": msg["content"]})
    return out


def _prompt(value: Any, key: str) -> Prompt:
    if isinstance(value, list):
        messages = _messages(value, key)
        if not any(m["content"].strip() for m in messages):
            raise DataError("empty string", "every message of the prompt is empty", field=key)
        return messages
    return _text(value, key)


def _response(value: Any, key: str, allow_empty: bool = False) -> str:
    """A response string, or the content of the final assistant message of a message list."""
    if isinstance(value, list):
        last = _messages(value, key)[-1]
        if last["role"] != "assistant":
            raise DataError("wrong type", f"the final message must have role 'assistant', got {last['role']!r}",
                            field=key)
        return _text(last["content"], key, "final assistant message: ", allow_empty)
    return _text(value, key, allow_empty=allow_empty)


def _margin(record: dict, key: str) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DataError("wrong type", f"expected a number, got {type(value).__name__}", field=key)
    try:
        margin = float(value)
    except OverflowError:  # an integer beyond float range
        margin = math.inf
    if not math.isfinite(margin):
        raise DataError("non-finite margin", f"margin must be finite, got {margin}", field=key)
    return margin


def _split_dialogues(record: dict, ckey: str, rkey: str, allow_empty: bool) -> tuple[Prompt, str, str]:
    """(prompt, chosen, rejected) from two dialogues that share all turns but the last."""
    chosen, rejected = _get(record, ckey), _get(record, rkey)
    if isinstance(chosen, list) and isinstance(rejected, list):
        c_msgs, r_msgs = _messages(chosen, ckey), _messages(rejected, rkey)
        if len(c_msgs) < 2 or c_msgs[:-1] != r_msgs[:-1]:
            raise DataError("no shared prefix", "chosen and rejected conversations must share all messages "
                            "but the final one", field=ckey)
        return _prompt(c_msgs[:-1], ckey), _response(c_msgs, ckey, allow_empty), _response(r_msgs, rkey, allow_empty)
    chosen, rejected = _text(chosen, ckey), _text(rejected, rkey)
    cut = os.path.commonprefix([chosen, rejected]).rfind(HH_MARKER)
    if cut < 0:
        raise DataError("no shared prefix", f"chosen and rejected dialogues share no prefix ending in {HH_MARKER!r}",
                        field=ckey)
    end = cut + len(HH_MARKER)
    # The final assistant turn may be empty in native HH data (see the module docstring).
    return chosen[:end].strip(), chosen[end:].strip(), rejected[end:].strip()
