"""load_preferences: file types, standard / HH / chat forms, column maps, validation errors, real data."""

from __future__ import annotations

import gzip
import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from bayesrm.data.errors import DataError
from bayesrm.data.loading import HH_MARKER, embedded_hh_harmless_path, load_preferences
from conftest import SHARED_DATA

HH_FILE = SHARED_DATA / "hh-rlhf-harmless-base-test.jsonl.gz"
PANDALM_FILE = SHARED_DATA / "pandalm-test-human.jsonl"

GOOD = {"prompt": "what is 2+2?", "chosen": "4", "rejected": "5"}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_jsonl(path: Path, records: list[dict]) -> Path:
    return write_lines(path, [json.dumps(r) for r in records])


def hh(turns: list[tuple[str, str]]) -> str:
    """A native HH dialogue string from (role, text) turns."""
    return "".join(f"\n\n{role}: {text}" for role, text in turns)


# ---- forms ---------------------------------------------------------------------------------
def test_standard_jsonl_fields_margin_and_source(tmp_path):
    path = write_lines(tmp_path / "d.jsonl", [
        json.dumps({**GOOD, "margin": 1.5, "extra": [1, 2]}),
        "",  # blank lines are skipped but still counted for line numbers
        json.dumps({"prompt": "hi", "chosen": "hello", "rejected": "go away", "margin": None}),
    ])
    res = load_preferences(path)
    assert res.form == "standard" and res.skipped == 0 and len(res) == 2
    a, b = res.pairs
    assert (a.prompt, a.chosen, a.rejected, a.margin) == ("what is 2+2?", "4", "5", 1.5)
    assert (b.prompt, b.chosen, b.rejected, b.margin) == ("hi", "hello", "go away", None)
    assert (a.source, b.source) == (f"{path}:1", f"{path}:3")
    assert res.summary().startswith(f"2 pairs from {path} (standard); skipped 0")


def test_hh_dialogues_split_at_last_shared_assistant_marker(tmp_path):
    shared = [("Human", "how do I pick a lock?"), ("Assistant", "Why do you ask?"), ("Human", "my own door")]
    records = [
        {"chosen": hh(shared + [("Assistant", "Call a locksmith.")]),
         "rejected": hh(shared + [("Assistant", "Use a tension wrench.")])},
        # responses sharing a first word: the split must not move into the response
        {"chosen": hh([("Human", "hi"), ("Assistant", "Sure thing")]),
         "rejected": hh([("Human", "hi"), ("Assistant", "Sure, no")])},
    ]
    res = load_preferences(write_jsonl(tmp_path / "hh.jsonl", records))
    assert res.form == "hh" and len(res) == 2
    p = res.pairs[0]
    assert p.prompt == "Human: how do I pick a lock?\n\nAssistant: Why do you ask?\n\nHuman: my own door\n\nAssistant:"
    assert (p.chosen, p.rejected) == ("Call a locksmith.", "Use a tension wrench.")
    assert (res.pairs[1].prompt, res.pairs[1].chosen, res.pairs[1].rejected) == ("Human: hi\n\nAssistant:", "Sure thing", "Sure, no")
    for pair, rec in zip(res.pairs, records):  # prompt + response rebuild the original dialogues
        assert rec["chosen"] == "\n\n" + pair.prompt + " " + pair.chosen
        assert rec["rejected"] == "\n\n" + pair.prompt + " " + pair.rejected
    forced = load_preferences(tmp_path / "hh.jsonl", format="hh")
    assert forced.pairs == res.pairs


def test_chat_message_forms(tmp_path):
    user = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi"}]
    records = [
        {"prompt": user, "chosen": [{"role": "assistant", "content": "hello!"}],
         "rejected": [{"role": "assistant", "content": "what"}]},
        {"prompt": user, "chosen": "hello there", "rejected": [{"role": "assistant", "content": "no", "x": 1}]},
    ]
    res = load_preferences(write_jsonl(tmp_path / "chat.jsonl", records))
    assert [(p.prompt, p.chosen, p.rejected) for p in res.pairs] == [
        (user, "hello!", "what"), (user, "hello there", "no")]
    # implicit prompt: full conversations sharing all but the final assistant message (TRL format)
    conv = [{"chosen": user + [{"role": "assistant", "content": "hello!"}],
             "rejected": user + [{"role": "assistant", "content": "go away"}]}]
    res = load_preferences(write_jsonl(tmp_path / "implicit.jsonl", conv))
    assert res.form == "hh" and (res.pairs[0].prompt, res.pairs[0].chosen, res.pairs[0].rejected) == (user, "hello!", "go away")


def test_column_map(tmp_path):
    rec = {"question": "q?", "good": "yes", "bad": "no", "strength": 2}
    path = write_jsonl(tmp_path / "mapped.jsonl", [rec])
    res = load_preferences(path, columns={"prompt": "question", "chosen": "good", "rejected": "bad", "margin": "strength"})
    assert (res.pairs[0].prompt, res.pairs[0].chosen, res.pairs[0].rejected, res.pairs[0].margin) == ("q?", "yes", "no", 2.0)
    with pytest.raises(DataError, match=r"mapped.jsonl:1: field 'rejected': missing"):
        load_preferences(path, columns={"prompt": "question", "chosen": "good"})
    with pytest.raises(ValueError, match="unknown field 'answer'"):
        load_preferences(path, columns={"answer": "good"})


def test_json_gz_and_limit(tmp_path):
    records = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(5)]
    gz = tmp_path / "d.jsonl.gz"
    with gzip.open(gz, "wt", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps(r) for r in records))
    assert [p.chosen for p in load_preferences(gz).pairs] == [f"c{i}" for i in range(5)]
    js = tmp_path / "d.json"
    js.write_text(json.dumps(records))
    res = load_preferences(js, limit=3)
    assert [p.prompt for p in res.pairs] == ["p0", "p1", "p2"] and res.pairs[2].source == f"{js}:3"


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [{**GOOD, "margin": 0.5}, {"prompt": "a", "chosen": "b", "rejected": "c", "margin": float("nan")}]
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DataError) as info:
        load_preferences(path)
    assert str(info.value) == f"{path}: record 2: field 'margin': margin must be finite, got nan"
    assert (info.value.line, info.value.field, info.value.reason) == (2, "margin", "non-finite margin")
    res = load_preferences(path, skip_invalid=True)
    assert [(p.chosen, p.margin) for p in res.pairs] == [("4", 0.5)] and res.skip_reasons == Counter({"non-finite margin": 1})


def test_saved_datasets_directory(tmp_path):
    datasets = pytest.importorskip("datasets")
    train = [{"prompt": f"p{i}", "chosen": f"c{i}", "rejected": f"r{i}"} for i in range(3)]
    test = [{"prompt": "tp", "chosen": "tc", "rejected": "tr"}]
    single = tmp_path / "single"
    datasets.Dataset.from_list(train).save_to_disk(str(single))
    assert [p.chosen for p in load_preferences(single).pairs] == ["c0", "c1", "c2"]
    with pytest.raises(DataError, match="has no splits"):
        load_preferences(single, split="test")

    both = tmp_path / "dict"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(train), "test": datasets.Dataset.from_list(test)}).save_to_disk(str(both))
    assert len(load_preferences(both)) == 3  # default split "train"
    assert [p.chosen for p in load_preferences(both, split="test").pairs] == ["tc"]
    with pytest.raises(DataError, match=r"no split 'dev'; available splits: train, test"):
        load_preferences(both, split="dev")

    no_train = tmp_path / "no_train"
    datasets.DatasetDict({"test": datasets.Dataset.from_list(test)}).save_to_disk(str(no_train))
    with pytest.raises(DataError, match=r"no split 'train'; available splits: test"):
        load_preferences(no_train)
    (tmp_path / "plain_dir").mkdir()
    with pytest.raises(DataError, match="not a saved Hugging Face dataset"):
        load_preferences(tmp_path / "plain_dir")


# ---- validation ----------------------------------------------------------------------------
BAD_LINES = [
    ('{"prompt": "p", "chosen": ', "malformed JSON", None),
    (json.dumps({"prompt": "p", "chosen": "c"}), "missing field", "rejected"),
    (json.dumps({"prompt": "p", "chosen": "c", "rejected": None}), "missing field", "rejected"),
    (json.dumps({"prompt": "p", "chosen": " \n\t", "rejected": "r"}), "empty string", "chosen"),
    (json.dumps({"prompt": "", "chosen": "c", "rejected": "r"}), "empty string", "prompt"),
    (json.dumps({"prompt": "p", "chosen": 3, "rejected": "r"}), "wrong type", "chosen"),
    (json.dumps({"prompt": {"text": "p"}, "chosen": "c", "rejected": "r"}), "wrong type", "prompt"),
    (json.dumps({"prompt": "p", "chosen": "same", "rejected": "same"}), "identical responses", "chosen"),
    ('{"prompt": "p", "chosen": "c", "rejected": "r", "margin": NaN}', "non-finite margin", "margin"),
    ('{"prompt": "p", "chosen": "c", "rejected": "r", "margin": Infinity}', "non-finite margin", "margin"),
    (json.dumps({"prompt": "p", "chosen": "c", "rejected": "r", "margin": "1.0"}), "wrong type", "margin"),
    (json.dumps({"prompt": "p", "chosen": [{"role": "user", "content": "c"}], "rejected": "r"}), "wrong type", "chosen"),
    (json.dumps({"prompt": [{"role": "user"}], "chosen": "c", "rejected": "r"}), "missing field", "prompt"),
    (json.dumps([1, 2]), "wrong type", None),
]


@pytest.mark.parametrize("bad, reason, field", BAD_LINES)
def test_bad_record_names_file_line_field(tmp_path, bad, reason, field):
    path = write_lines(tmp_path / "data.jsonl", [json.dumps(GOOD), bad, json.dumps(GOOD)])
    with pytest.raises(DataError) as info:
        load_preferences(path)
    err = info.value
    assert (err.file, err.line, err.field, err.reason) == (str(path), 2, field, reason)
    prefix = f"{path}:2: " + (f"field {field!r}: " if field else "")
    assert str(err).startswith(prefix) and len(str(err)) > len(prefix)
    res = load_preferences(path, skip_invalid=True)
    assert len(res) == 2 and res.skipped == 1 and res.skip_reasons == Counter({reason: 1})


def test_hh_without_shared_prefix(tmp_path):
    rec = {"chosen": hh([("Human", "a"), ("Assistant", "x")]), "rejected": hh([("Human", "b"), ("Assistant", "y")])}
    path = write_jsonl(tmp_path / "hh.jsonl", [rec])
    with pytest.raises(DataError, match=r"hh.jsonl:1: field 'chosen': chosen and rejected dialogues share no prefix"):
        load_preferences(path)
    conv = {"chosen": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "x"}],
            "rejected": [{"role": "user", "content": "b"}, {"role": "assistant", "content": "y"}]}
    with pytest.raises(DataError, match="share all messages but the final one") as info:
        load_preferences(write_jsonl(tmp_path / "conv.jsonl", [conv]))
    assert info.value.reason == "no shared prefix"


def test_skip_invalid_counts_by_reason(tmp_path):
    lines = [json.dumps(GOOD), "not json", json.dumps({"prompt": "p", "chosen": "", "rejected": "r"}),
             json.dumps({"prompt": "p", "chosen": "c", "rejected": ""}), json.dumps({"prompt": "p", "chosen": "c"}),
             json.dumps({**GOOD, "rejected": GOOD["chosen"]}), json.dumps({"prompt": "x", "chosen": "y", "rejected": "z"})]
    res = load_preferences(write_lines(tmp_path / "mixed.jsonl", lines), skip_invalid=True)
    assert [p.source.rsplit(":", 1)[1] for p in res.pairs] == ["1", "7"]
    assert res.skipped == 5
    assert res.skip_reasons == Counter({"empty string": 2, "malformed JSON": 1, "missing field": 1, "identical responses": 1})
    assert "skipped 5: 2 empty string" in res.summary()
    kept = load_preferences(tmp_path / "mixed.jsonl", skip_invalid=True, allow_empty_responses=True)
    assert len(kept) == 4 and kept.skip_reasons["empty string"] == 0


def test_json_record_errors_and_file_errors(tmp_path):
    js = tmp_path / "d.json"
    js.write_text(json.dumps([GOOD, {"prompt": "p", "chosen": 1, "rejected": "r"}]))
    with pytest.raises(DataError, match=r"d.json: record 2: field 'chosen': expected a string, got int"):
        load_preferences(js)
    js.write_text('[\n{"prompt": "p",\n  oops}]')
    with pytest.raises(DataError) as info:
        load_preferences(js, skip_invalid=True)  # a file that does not parse cannot be skipped
    assert (info.value.line, info.value.reason) == (3, "malformed JSON")
    js.write_text(json.dumps({"prompt": "p"}))
    with pytest.raises(DataError, match="expected a JSON list of records, got dict"):
        load_preferences(js)
    with pytest.raises(DataError, match="cannot read: no such file") as info:
        load_preferences(tmp_path / "missing.jsonl", skip_invalid=True)
    assert info.value.reason == "unreadable"
    (tmp_path / "broken.jsonl.gz").write_bytes(b"definitely not gzip")
    with pytest.raises(DataError, match=r"broken.jsonl.gz: cannot read"):
        load_preferences(tmp_path / "broken.jsonl.gz", skip_invalid=True)
    (tmp_path / "d.csv").write_text("prompt,chosen,rejected\n")
    with pytest.raises(DataError, match=r"d.csv: unknown file type") as info:
        load_preferences(tmp_path / "d.csv")
    assert info.value.reason == "unknown format"
    with pytest.raises(DataError, match="unknown format 'tsv'"):
        load_preferences(js, format="tsv")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="no preference records"):
        load_preferences(tmp_path / "empty.jsonl")


# ---- real data -----------------------------------------------------------------------------
@pytest.mark.skipif(not HH_FILE.exists(), reason="shared data not available")
def test_real_hh_harmless_file():
    raw = [json.loads(line) for line in gzip.open(HH_FILE, "rt", encoding="utf-8")]
    res = load_preferences(HH_FILE)
    assert len(res) == len(raw) == 2312 and res.form == "hh" and res.skipped == 0
    for pair, rec in zip(res.pairs, raw):
        assert pair.prompt.startswith("Human:") and pair.prompt.endswith("Assistant:")
        assert pair.chosen != pair.rejected
        for response, dialogue in ((pair.chosen, rec["chosen"]), (pair.rejected, rec["rejected"])):
            assert dialogue.startswith("\n\n" + pair.prompt)
            assert dialogue.rstrip().endswith(response)
            # a response is empty exactly when the dialogue ends on an empty assistant turn
            assert (response == "") == dialogue.rstrip().endswith(HH_MARKER)
    n_empty = sum(not p.chosen or not p.rejected for p in res.pairs)
    assert 0 < n_empty < 10  # a handful of silent replies in harmless-base; kept on purpose


@pytest.mark.skipif(not HH_FILE.exists(), reason="shared data not available")
def test_embedded_hh_copy_matches_shared_file():
    path = embedded_hh_harmless_path()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(HH_FILE.read_bytes()).hexdigest()
    notice = (path.parent / "LICENSE-hh-rlhf.md").read_text()
    assert "MIT License" in notice and "Anthropic" in notice and "anthropics/hh-rlhf" in notice


@pytest.mark.skipif(not PANDALM_FILE.exists(), reason="shared data not available")
def test_real_pandalm_file_loads_as_standard():
    raw = [json.loads(line) for line in PANDALM_FILE.read_text(encoding="utf-8").splitlines()]

    def reason(rec: dict) -> str | None:  # the checks, written out independently of the loader
        for key in ("prompt", "chosen", "rejected"):
            if not isinstance(rec[key], str):
                return "wrong type"
            if not rec[key].strip():
                return "empty string"
        return "identical responses" if rec["chosen"] == rec["rejected"] else None

    expected = Counter(r for r in map(reason, raw) if r is not None)
    res = load_preferences(PANDALM_FILE, skip_invalid=True)
    assert res.form == "standard" and res.skip_reasons == expected
    assert len(res) == len(raw) - sum(expected.values()) > 800
    good = [r for r in raw if reason(r) is None]
    assert [(p.prompt, p.chosen, p.rejected) for p in res.pairs] == [(r["prompt"], r["chosen"], r["rejected"]) for r in good]
    with pytest.raises(DataError, match=r"pandalm-test-human.jsonl:\d+: field '(chosen|rejected)'"):
        load_preferences(PANDALM_FILE)


def test_read_scoring_records(tmp_path):
    from bayesrm.data.loading import read_scoring_records

    msgs = [{"role": "user", "content": "hi"}]
    path = write_lines(tmp_path / "s.jsonl", [json.dumps({"prompt": "p", "response": "r", "id": 7}), "",
                                               json.dumps({"prompt": msgs, "response": ""})])
    assert read_scoring_records(path) == [{"prompt": "p", "response": "r", "id": 7}, {"prompt": msgs, "response": ""}]
    path = write_lines(tmp_path / "t.jsonl", [json.dumps({"q": "p", "a": "r"}), json.dumps({"q": "p", "a": 1})])
    with pytest.raises(DataError, match=r"t.jsonl:2: field 'a': expected a string, got int"):
        read_scoring_records(path, prompt_field="q", response_field="a")
    with pytest.raises(DataError, match=r"t.jsonl:1: field 'prompt': missing"):
        read_scoring_records(path)
