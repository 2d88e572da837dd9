"""Shared pieces of the property-based fuzz tests (``tests/test_fuzz_*.py``): hypothesis profiles,
strategies for messy user records and files, and the check that an error is a proper user error.

Example counts are bounded for CI. ``BAYESRM_FUZZ=long`` runs each fuzz test with 25x the examples
and a random seed (CI is derandomized, so it is reproducible), e.g.

    BAYESRM_FUZZ=long python -m pytest tests/test_fuzz_*.py -q
"""

from __future__ import annotations

import gzip
import json
import os
import random
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

MODE = os.environ.get("BAYESRM_FUZZ", "ci")
if MODE not in ("ci", "long"):
    raise RuntimeError(f"BAYESRM_FUZZ must be 'ci' or 'long', got {MODE!r}")
SCALE = {"ci": 1, "long": 25}[MODE]
_common = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                                     HealthCheck.data_too_large, HealthCheck.large_base_example])
settings.register_profile("bayesrm-ci", derandomize=True, database=None, print_blob=True, **_common)
settings.register_profile("bayesrm-long", print_blob=True, **_common)
settings.load_profile(f"bayesrm-{MODE}")


def fuzz(examples: int) -> settings:
    """Settings of one fuzz test: ``examples`` in CI, SCALE times as many in the long mode."""
    return settings(max_examples=examples * SCALE)


# ---- text --------------------------------------------------------------------------------
ODD = ["", " ", "\t", "\r\n", "\n", "\u2028", "\u2029", "\x85", "\x0b\x0c", "\x1c\x1d\x1e", "\ufeff", "\x00",
       "\u200b", "\ud800", "\udfff", "a\ud83dz", "\U0001f600", "e\u0301", "\n\nAssistant:", "\n\nHuman:", "null",
       '"', "\\", "}{", "\u202e"]
"""Hand-picked troublemakers: line and paragraph separators, NEL, controls, BOM, NUL, lone
surrogates (only JSON escapes can carry them), combining marks, the HH markers."""

any_char = st.characters(codec=None, exclude_categories=())  # every code point, lone surrogates included
text = st.one_of(
    st.text(max_size=12),
    st.text(any_char, max_size=12),
    st.sampled_from(ODD),
    st.lists(st.sampled_from(ODD + ["good", "bad", "it is", "w1"]), max_size=5).map("".join),
    st.builds(lambda c, n: c * n, st.sampled_from(["a ", "\u2028", "é"]), st.integers(5_000, 60_000)),  # huge
)
word_text = st.lists(st.sampled_from(["good", "bad", "the", "cat", "is", "what", "w3", "\u2028", "Ω"]),
                     min_size=1, max_size=6).map(" ".join)
"""Non-empty, mostly printable text (valid records must be reachable, not only broken ones)."""

numbers = st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.just(10**400),
                    st.just(-(10**30)), st.sampled_from([0, 1, -1.5, 1e308, 5e-324]))
json_scalar = st.one_of(st.none(), st.booleans(), numbers, text)
json_value = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)), max_leaves=6)

ROLES = ["user", "assistant", "system", "tool", "human", "gpt", "", "Assistant", "\u2028"]
role = st.one_of(st.sampled_from(ROLES), st.sampled_from(ROLES), json_scalar)


@st.composite
def message(draw) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(json_value)  # not an object at all
    msg = {}
    if draw(st.integers(0, 7)):
        msg["role"] = draw(role)
    if draw(st.integers(0, 7)):
        msg["content"] = draw(st.one_of(text, word_text, word_text, json_scalar))
    if draw(st.booleans()):
        msg.update(draw(st.dictionaries(st.sampled_from(["name", "tool_calls", "x"]), json_value, max_size=2)))
    return msg


messages = st.lists(message(), max_size=4)
good_messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system"]), "content": word_text}),
    min_size=1, max_size=4)


def hh_dialogue(turns: list[tuple[str, str]]) -> str:
    return "".join(f"\n\n{r}: {t}" for r, t in turns)


@st.composite
def hh_pair(draw) -> tuple[Any, Any]:
    """(chosen, rejected) in native HH form (strings) or as message lists, mostly sharing a prefix."""
    shared = draw(st.lists(st.tuples(st.sampled_from(["Human", "Assistant"]), word_text), min_size=1, max_size=3))
    if shared[-1][0] == "Assistant" and draw(st.booleans()):
        shared.append(("Human", draw(word_text)))
    a, b = draw(st.one_of(word_text, text)), draw(st.one_of(word_text, text))
    if draw(st.booleans()):
        return hh_dialogue(shared + [("Assistant", a)]), hh_dialogue(shared + [("Assistant", b)])
    msgs = [{"role": "user" if r == "Human" else "assistant", "content": t} for r, t in shared]
    other = msgs if draw(st.integers(0, 5)) else msgs[:-1]  # sometimes not the same prefix
    return msgs + [{"role": "assistant", "content": a}], other + [{"role": draw(role), "content": b}]


FIELD_NAMES = ["prompt", "chosen", "rejected", "margin", "question", "good", "bad"]


@st.composite
def preference_record(draw) -> Any:
    """One record: valid standard / HH / chat records, broken variants of them, and arbitrary JSON."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return draw(json_value)  # maybe not even an object
    if kind <= 3:  # standard, mostly valid
        rec = {"prompt": draw(st.one_of(word_text, good_messages, text)),
               "chosen": draw(st.one_of(word_text, word_text, good_messages.map(
                   lambda m: m + [{"role": "assistant", "content": "good"}]))),
               "rejected": draw(st.one_of(word_text, text))}
    elif kind <= 5:  # HH
        rec = dict(zip(("chosen", "rejected"), draw(hh_pair())))
    else:  # any fields, any values
        rec = draw(st.dictionaries(st.sampled_from(FIELD_NAMES), st.one_of(json_value, text, messages), max_size=5))
    if draw(st.booleans()):
        rec["margin"] = draw(st.one_of(numbers, json_scalar))
    if draw(st.integers(0, 3)) == 0:
        rec[draw(st.sampled_from(FIELD_NAMES + ["extra"]))] = draw(st.one_of(json_value, messages))
    for name in draw(st.lists(st.sampled_from(FIELD_NAMES[:3]), max_size=1)):
        rec.pop(name, None)  # a missing field
    return rec


column_maps = st.one_of(
    st.none(), st.none(),
    st.dictionaries(st.sampled_from(["prompt", "chosen", "rejected", "margin"]),
                    st.sampled_from(FIELD_NAMES), min_size=1, max_size=3),
    st.dictionaries(st.sampled_from(["prompt", "bogus"]), st.one_of(st.text(max_size=3), st.integers()), max_size=2),
)


# ---- files -------------------------------------------------------------------------------
BROKEN_LINES = [b'{"prompt": "a", "chosen"', b"\xff\xfe\x00garbage", b"[" * 20_000 + b"]" * 20_000,
                b'{"prompt": "x", "chosen": 1' + b"1" * 5000 + b"}", b"NaN", b'"just a string"', b"\x00",
                b'{"prompt": "\xc3(", "chosen": "a", "rejected": "b"}', b"\xef\xbb\xbf{}"]


@st.composite
def jsonl_bytes(draw, records: list[Any]) -> tuple[bytes, int]:
    """(file bytes, number of non-blank lines) of records as JSONL with messy framing: CRLF, a
    BOM, blank lines, invalid UTF-8 and broken lines mixed in."""
    ascii_only = draw(st.booleans())
    newline = draw(st.sampled_from([b"\n", b"\r\n"]))
    lines = []
    for rec in records:
        text_ = json.dumps(rec, ensure_ascii=ascii_only or _has_surrogate(rec))
        lines.append(text_.encode("utf-8"))
        if draw(st.integers(0, 9)) == 0:
            lines.append(draw(st.sampled_from([b"", b"   ", b"\t", b"\r"])))
        if draw(st.integers(0, 14)) == 0:
            lines.append(draw(st.sampled_from(BROKEN_LINES)))
    raw = newline.join(lines) + (newline if draw(st.booleans()) else b"")
    if draw(st.integers(0, 9)) == 0:
        raw = b"\xef\xbb\xbf" + raw
    counted = sum(1 for line in raw.split(b"\n") if line.strip())
    return raw, counted


def _has_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def write_records(path: Path, raw: bytes) -> Path:
    if path.name.endswith(".gz"):
        raw = gzip.compress(raw, mtime=0)
    path.write_bytes(raw)
    return path


def corrupt(raw: bytes, seed: int) -> bytes:
    """raw with a few bytes flipped, cut short, or invalid UTF-8 spliced in (seeded)."""
    rng = random.Random(seed)
    data = bytearray(raw)
    how = rng.randrange(3)
    if how == 0 and data:
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif how == 1:
        data = data[: rng.randrange(len(data) + 1)]
    else:
        at = rng.randrange(len(data) + 1)
        data[at:at] = rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xef\xbb\xbf"])
    return bytes(data)


# ---- the outcome check ---------------------------------------------------------------------
def assert_user_error(err: BaseException, path: Path | str | None = None) -> None:
    """A one-line user error (DataError / ValueError / CheckpointError) that names the file, when one is given."""
    assert isinstance(err, ValueError), f"{type(err).__name__} is not a user error: {err}"
    message = str(err)
    assert message and "\n" not in message, f"not a one-line message: {message!r}"
    if path is not None:
        assert str(path) in message, f"message does not name {path}: {message}"
