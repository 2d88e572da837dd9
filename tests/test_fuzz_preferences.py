"""Fuzzing load_preferences: every generated file ends in a valid result whose pairs encode, a
DataError naming the file (and, for a bad record, its line and field), or counted skips under
skip_invalid. Any other exception, from anywhere inside, fails the test. See tests/fuzzing.py."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bayesrm.data.encoding import PairEncoder
from bayesrm.data.errors import DataError
from bayesrm.data.loading import load_preferences
from conftest import make_tiny_tokenizer
from fuzzing import (
    column_maps, corrupt, fuzz, hh_pair, jsonl_bytes, preference_record, text, word_text, write_records,
    assert_user_error,
)

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
FILE_LEVEL = {"unreadable", "unknown format", "no records", "unknown split"}


@pytest.fixture(scope="module")
def encoders():
    """An encoder-style (BERT pair) and a decoder-style (chat template) encoder on the tiny tokenizer."""
    bert = make_tiny_tokenizer()
    chat = make_tiny_tokenizer()
    chat.chat_template = CHATML
    chat.eos_token = "</s>"
    return [PairEncoder(bert, max_length=24), PairEncoder(chat, max_length=24, is_decoder=True)]


def check_load(path: Path, n_records: int, encoders, *, format: str = "auto", columns=None, skip: bool = False,
               whole_file_json: bool = False, allow_empty: bool = False):
    """Load and check the outcome is one of the three allowed ones; returns the LoadResult or None."""
    try:
        result = load_preferences(path, format=format, columns=columns, skip_invalid=skip,
                                  allow_empty_responses=allow_empty)
    except DataError as err:
        assert_user_error(err, path)
        assert err.file == str(path)
        file_level = err.line is None or (whole_file_json and err.reason in {"malformed JSON", "wrong type"})
        if skip:
            assert file_level, f"skip_invalid raised a record-level error: {err}"
        elif not file_level:
            assert 1 <= err.line <= max(n_records, 1) or not whole_file_json
            assert err.field is not None or err.reason in {"malformed JSON", "wrong type"}, err
        else:
            assert err.reason in FILE_LEVEL | {"malformed JSON", "wrong type"}, err
        return None
    except ValueError as err:  # only a bad column map is refused this way
        assert columns is not None and "columns" in str(err), err
        assert_user_error(err)
        return None
    assert sum(result.skip_reasons.values()) == result.skipped
    assert len(result.pairs) + result.skipped == n_records
    if not skip:
        assert result.skipped == 0
    for pair in result.pairs:
        if isinstance(pair.prompt, str):
            assert pair.prompt.strip()
        else:
            assert pair.prompt and all(isinstance(m["role"], str) and isinstance(m["content"], str) for m in pair.prompt)
        assert isinstance(pair.chosen, str) and isinstance(pair.rejected, str) and pair.chosen != pair.rejected
        assert pair.margin is None or (type(pair.margin) is float and math.isfinite(pair.margin))
        assert pair.source.startswith(str(path))
    for encoder in encoders:  # a valid result must also be usable: tokenizing never fails
        ids = encoder.encode([p.prompt for p in result.pairs] * 2, [p.chosen for p in result.pairs]
                             + [p.rejected for p in result.pairs])
        assert all(0 < len(row) <= encoder.max_length for row in ids)
    return result


@fuzz(70)
@given(records=st.lists(preference_record(), max_size=6), data=st.data(),
       suffix=st.sampled_from([".jsonl", ".jsonl", ".ndjson", ".jsonl.gz"]),
       format=st.sampled_from(["auto", "auto", "standard", "hh"]), columns=column_maps, skip=st.booleans(),
       allow_empty=st.booleans())
def test_jsonl_files(encoders, records, data, suffix, format, columns, skip, allow_empty):
    raw, n_lines = data.draw(jsonl_bytes(records))
    with tempfile.TemporaryDirectory() as tmp:
        path = write_records(Path(tmp) / f"data{suffix}", raw)
        check_load(path, n_lines, encoders, format=format, columns=columns, skip=skip, allow_empty=allow_empty)


@fuzz(30)
@given(records=st.one_of(st.lists(preference_record(), max_size=6), preference_record()),
       bom=st.booleans(), indent=st.sampled_from([None, 1]), suffix=st.sampled_from([".json", ".json.gz"]),
       format=st.sampled_from(["auto", "standard", "hh"]), skip=st.booleans())
def test_json_files(encoders, records, bom, indent, suffix, format, skip):
    body = json.dumps(records, indent=indent).encode()  # ASCII escapes carry any lone surrogates
    with tempfile.TemporaryDirectory() as tmp:
        path = write_records(Path(tmp) / f"data{suffix}", (b"\xef\xbb\xbf" if bom else b"") + body)
        n = len(records) if isinstance(records, list) else 0
        check_load(path, n, encoders, format=format, skip=skip, whole_file_json=True)


@fuzz(40)
@given(records=st.lists(preference_record(), min_size=1, max_size=4), seed=st.integers(0, 2**32 - 1),
       suffix=st.sampled_from([".jsonl", ".jsonl.gz", ".json", ".json.gz", ".parquet"]), skip=st.booleans())
def test_corrupted_bytes(encoders, records, seed, suffix, skip):
    """Flipped bytes, truncation and spliced invalid UTF-8 in any file type, compressed ones included."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"data{suffix}"
        if suffix == ".parquet":
            _write_parquet(path, [{"prompt": f"p{i}", "chosen": "good " * i, "rejected": "bad"} for i in range(20)],
                           compression=("none", "snappy")[seed % 2])
            raw = path.read_bytes()
        else:
            raw = "\n".join(json.dumps(r) for r in records).encode() if "jsonl" in suffix else json.dumps(records).encode()
            if suffix.endswith(".gz"):
                import gzip

                raw = gzip.compress(raw, mtime=0)
        path.write_bytes(corrupt(raw, seed))
        try:
            result = load_preferences(path, skip_invalid=skip)
        except DataError as err:
            assert_user_error(err, path)
            return
        assert len(result.pairs) + result.skipped >= 1


# ---- Parquet and Hugging Face dataset directories ----------------------------------------------
arrow_text = text.filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))  # Arrow strings are UTF-8
COLUMN_KINDS = {
    "string": (lambda: st.one_of(st.none(), word_text, arrow_text), "string"),
    "messages": (lambda: st.one_of(st.none(), st.lists(st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "assistant", "system", "bot"]), "content": st.one_of(word_text, arrow_text)}),
        max_size=3)), "messages"),
    "float": (lambda: st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)), "float64"),
    "int": (lambda: st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), "int64"),
}


@st.composite
def arrow_rows(draw):
    """Rows of a table with one fixed type per column (Arrow needs that), mostly in the expected shape."""
    names = draw(st.lists(st.sampled_from(["prompt", "chosen", "rejected", "margin", "other"]), unique=True,
                          min_size=1, max_size=5))
    kinds = {n: draw(st.sampled_from(["float", "int", "string"] if n == "margin" else list(COLUMN_KINDS))) for n in names}
    n_rows = draw(st.integers(0, 5))
    rows = []
    for _ in range(n_rows):
        row = {n: draw(COLUMN_KINDS[k][0]()) for n, k in kinds.items()}
        if draw(st.booleans()) and {"chosen", "rejected"} <= set(kinds) and kinds["chosen"] == "string":
            c, r = draw(hh_pair())  # a real HH-shaped row now and then
            if isinstance(c, str) and kinds["rejected"] == "string":
                row.update(chosen=c, rejected=r)
        rows.append(row)
    return rows, kinds


def _schema(kinds):
    import pyarrow as pa

    types = {"string": pa.string(), "float64": pa.float64(), "int64": pa.int64(),
             "messages": pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))}
    return pa.schema([(n, types[COLUMN_KINDS[k][1]]) for n, k in kinds.items()])


def _write_parquet(path: Path, rows, kinds=None, compression="snappy"):
    import pyarrow as pa
    import pyarrow.parquet as pq

    kinds = kinds or {k: "string" for k in rows[0]}
    pq.write_table(pa.Table.from_pylist(rows, schema=_schema(kinds)), path, compression=compression)


@fuzz(25)
@given(table=arrow_rows(), format=st.sampled_from(["auto", "standard", "hh"]), skip=st.booleans())
def test_parquet_files(encoders, table, format, skip):
    rows, kinds = table
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.parquet"
        _write_parquet(path, rows, kinds)
        check_load(path, len(rows), encoders, format=format, skip=skip, whole_file_json=True)


@pytest.fixture(scope="module", autouse=True)
def _quiet_datasets():
    import datasets

    datasets.disable_progress_bars()
    yield
    datasets.enable_progress_bars()


@fuzz(8)
@given(table=arrow_rows(), splits=st.sampled_from([None, ["train"], ["test"], ["train", "test"]]),
       split=st.sampled_from([None, "train", "test", "validation"]), skip=st.booleans())
def test_dataset_directories(encoders, table, splits, split, skip):
    import datasets
    import pyarrow as pa

    rows, kinds = table
    ds = datasets.Dataset(pa.Table.from_pylist(rows, schema=_schema(kinds)))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ds"
        (datasets.DatasetDict({s: ds for s in splits}) if splits else ds).save_to_disk(str(path))
        try:
            result = load_preferences(path, split=split, skip_invalid=skip)
        except DataError as err:
            assert_user_error(err, path)
            if skip:
                assert err.line is None or err.reason in FILE_LEVEL, err
            if err.reason == "unknown split":
                assert (splits is None and split is not None) or (splits and (split or "train") not in splits)
            return
        assert len(result.pairs) + result.skipped == len(rows)


@fuzz(10)
@given(names=st.lists(st.sampled_from(["state.json", "dataset_info.json", "data-00000-of-00001.arrow",
                                       "dataset_dict.json", "train"]), unique=True, max_size=3),
       content=st.sampled_from([b"", b"{}", b"[]", b"\xff\xfe", b'{"_data_files": [{"filename": "x.arrow"}]}',
                                b'{"splits": ["train"]}']))
def test_directories_that_are_not_datasets(names, content):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ds"
        path.mkdir()
        for name in names:
            if name == "train":
                (path / name).mkdir()
            else:
                (path / name).write_bytes(content)
        with pytest.raises(DataError) as info:
            load_preferences(path)
        assert_user_error(info.value, path)


@fuzz(15)
@given(prompt=st.one_of(text, word_text), chosen=word_text, rejected=word_text)
def test_valid_records_round_trip(encoders, prompt, chosen, rejected):
    """The positive half: any record with valid text loads exactly as written (nothing normalised away)."""
    record = {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.jsonl"
        path.write_text(json.dumps(record) + "\n", encoding="utf-8")
        result = check_load(path, 1, encoders, format="standard", skip=True)
    valid = prompt.strip() and chosen.strip() and rejected.strip() and chosen != rejected and all(0xD800 > ord(c) or ord(c) > 0xDFFF for c in prompt)
    assert (result is not None and len(result.pairs) == 1) == bool(valid)
    if valid:
        pair = result.pairs[0]
        assert (pair.prompt, pair.chosen, pair.rejected) == (prompt, chosen, rejected)
