"""Fuzzing the other readers of user files: prompt files, `bayesrm score` inputs (and its output
rows), the YAML file layer behind every --config, and the sample cache. Each input ends in a valid
result or a one-line user error naming the file; see tests/fuzzing.py for the profiles."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import given
from hypothesis import strategies as st

from bayesrm.data.errors import DataError
from bayesrm.data.loading import read_scoring_records
from bayesrm.data.prompts import PROMPT_FIELDS, load_prompts
from fuzzing import (
    BROKEN_LINES, assert_user_error, corrupt, fuzz, json_value, jsonl_bytes, message, text, word_text,
)


def _valid_text(s: str) -> bool:
    return not any(0xD800 <= ord(c) <= 0xDFFF for c in s)


# ---- prompt files --------------------------------------------------------------------------
prompt_record = st.one_of(
    word_text, text, json_value,
    st.dictionaries(st.sampled_from(list(PROMPT_FIELDS) + ["instruction", "other"]),
                    st.one_of(word_text, text, json_value), max_size=3),
)


@fuzz(50)
@given(records=st.lists(prompt_record, max_size=6), data=st.data(), suffix=st.sampled_from([".jsonl", ".json", ".txt"]),
       field=st.sampled_from([None, None, "prompt", "instruction"]))
def test_prompt_files(records, data, suffix, field):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"prompts{suffix}"
        if suffix == ".jsonl":
            raw, _ = data.draw(jsonl_bytes(records))
        elif suffix == ".json":
            raw = json.dumps(records).encode()
        else:
            lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
            raw = data.draw(st.sampled_from(["\n", "\r\n"])).join(lines).encode("utf-8", "replace")
        if data.draw(st.integers(0, 4)) == 0:
            raw = b"\xef\xbb\xbf" + raw
        if data.draw(st.integers(0, 5)) == 0:
            raw = corrupt(raw, data.draw(st.integers(0, 2**16)))
        path.write_bytes(raw)
        try:
            prompts = load_prompts(path, field=field)
        except DataError as err:
            assert_user_error(err, path)
            return
        assert prompts and all(isinstance(p, str) and p.strip() and _valid_text(p) for p in prompts)
        assert not prompts[0].startswith("\ufeff")  # a byte-order mark is not part of the first prompt
        if suffix == ".txt":
            assert len(prompts) == sum(1 for line in raw.decode("utf-8-sig").split("\n") if line.strip())


# ---- score inputs and output rows -----------------------------------------------------------
score_record = st.one_of(
    json_value,
    st.fixed_dictionaries({}, optional={"prompt": st.one_of(word_text, text, st.lists(message(), max_size=3), json_value),
                                        "response": st.one_of(word_text, text, json_value),
                                        "id": json_value, "meta": json_value}),
)


def _check_records(path: Path, pf: str, rf: str):
    try:
        records = read_scoring_records(path, pf, rf)
    except DataError as err:
        assert_user_error(err, path)
        return None
    for r in records:
        prompt, response = r[pf], r[rf]
        assert isinstance(response, str) and _valid_text(response)
        if isinstance(prompt, str):
            assert prompt.strip() and _valid_text(prompt)
        else:
            assert prompt and all(isinstance(m["role"], str) and isinstance(m["content"], str) for m in prompt)
    return records


@fuzz(50)
@given(records=st.lists(score_record, max_size=5), data=st.data(),
       fields=st.sampled_from([("prompt", "response"), ("prompt", "response"), ("id", "meta")]))
def test_score_inputs_and_output_rows(records, data, fields):
    from bayesrm.cli.score import scored_lines
    from bayesrm.types import RewardPrediction

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_bytes(data.draw(jsonl_bytes(records))[0])
        got = _check_records(path, *fields)
    if got is None:
        return
    n = len(got)
    members = torch.randn(3, n, dtype=torch.float64)
    pred = RewardPrediction(mean=members.mean(0), var=members.var(0, unbiased=False), members=members)
    lines = scored_lines(got, pred)
    assert len(lines) == n and all(line.endswith("\n") and line.count("\n") == 1 for line in lines)
    for line, record in zip(lines, got):
        row = json.loads(line)
        assert set(row) == set(record) | {"reward", "reward_var", "reward_std", "reward_members"}
        assert math.isclose(row["reward_std"] ** 2, row["reward_var"], rel_tol=1e-9, abs_tol=1e-12)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, tiny_bert_dir):
    from bayesrm.models.reward_model import RewardModel, RewardModelConfig

    out = tmp_path_factory.mktemp("score_model") / "model"
    RewardModel.from_config(RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=24), seed=0).save_pretrained(out)
    return out


@fuzz(8)
@given(records=st.lists(score_record, max_size=4), data=st.data(), to_dir=st.booleans())
def test_score_command(saved_model, records, data, to_dir, capsys):
    """End to end: `bayesrm score` exits 0 with one output row per record, or 2 with one line naming the input."""
    from bayesrm.cli.main import main

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.jsonl"
        path.write_bytes(data.draw(jsonl_bytes(records))[0])
        out = Path(tmp) if to_dir else Path(tmp) / "out.jsonl"
        expected = None if to_dir else _check_records(path, "prompt", "response")
        capsys.readouterr()
        code = main(["score", "--model", str(saved_model), "--input", str(path), "--out", str(out)])
        err = capsys.readouterr().err
        if expected is None:
            lines = [line for line in err.splitlines() if "error" in line]
            assert code == 2 and len(lines) == 1 and (str(path) in lines[0] or "--out" in lines[0]), err
            return
        assert code == 0, err
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert len(rows) == len(expected) and all(math.isfinite(r["reward"]) for r in rows)


# ---- the YAML file layer ----------------------------------------------------------------------
@st.composite
def yaml_bytes(draw):
    kind = draw(st.integers(0, 5))
    if kind == 0:
        return draw(st.binary(max_size=40))
    if kind == 1:
        return draw(st.sampled_from([b"", b"---\n", b"[" * 700 + b"]" * 700, b"a: [" * 700, b"- 1\n- 2\n",
                                     b"!!python/object/apply:os.system ['true']\n", b"a: !!binary AAAA\n",
                                     b"a: 1\na: 2\n", b"\xef\xbb\xbfa: 1\r\nb: 2\r\n", b"a: \xff\n", b"a: *x\n",
                                     b"key: 'unterminated\n", b"\x00", b"3", b"null", b"? [1, 2]\n: 3\n"]))
    value = draw(st.dictionaries(st.text(max_size=6), json_value, max_size=4) if kind <= 3 else json_value)
    try:
        body = yaml.safe_dump(value, allow_unicode=draw(st.booleans())).encode("utf-8", "surrogatepass")
    except (yaml.YAMLError, UnicodeEncodeError, RecursionError, ValueError):
        body = b"a: 1\n"
    if draw(st.booleans()):
        body = body.replace(b"\n", b"\r\n")
    return body


@fuzz(60)
@given(raw=yaml_bytes())
def test_yaml_files(raw):
    from bayesrm.fileio import read_yaml_mapping

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.yaml"
        path.write_bytes(raw)
        try:
            data = read_yaml_mapping(path)
        except ValueError as err:
            assert_user_error(err, path)
            return
        assert isinstance(data, dict)


OPTION_VALUES = st.one_of(st.booleans(), st.integers(-3, 10**6), st.floats(allow_nan=True), st.text(max_size=6),
                          st.sampled_from(["false", "true", "no", "2", "0.5", "1e-3", "x", ""]),
                          st.lists(st.sampled_from(["a=b", 1, None]), max_size=2), st.none(),
                          st.dictionaries(st.just("k"), st.integers(), max_size=1))
OPTIONS = ["skip_invalid", "max_steps", "learning_rate", "lora_r", "data", "columns", "test_fraction", "use_cpu",
           "batch_size", "prompt_field", "max_pairs", "split_seed", "bootstrap", "top_layers"]


@fuzz(60)
@given(values=st.dictionaries(st.sampled_from(OPTIONS), OPTION_VALUES, max_size=4),
       command=st.sampled_from(["train", "eval", "score", "laplace"]))
def test_config_values_are_typed_like_flags(values, command):
    """A --config value becomes what the same flag would give, or a one-line error naming file and key."""
    from bayesrm.cli.main import build_parser
    from bayesrm.cli.options import _parse_bool, apply_config

    parser = build_parser()
    required = {"train": [], "eval": ["--model", "m"], "score": ["--model", "m", "--input", "i"],
                "laplace": ["--model", "m"]}[command]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.yaml"
        path.write_text(yaml.safe_dump(values), encoding="utf-8")
        argv = [command, "--config", str(path), *required]
        args = parser.parse_args(argv)
        try:
            apply_config(parser, args, argv)
        except ValueError as err:
            assert_user_error(err, path)
            assert any(f": {key}:" in str(err) for key in values), err
            return
    actions = {a.dest: a for a in _actions_of(parser, command)}
    for key, value in values.items():
        action = actions.get(key)
        got = getattr(args, key)
        if action is None or key in ("model", "input") or value is None:
            continue
        if action.type is _parse_bool:
            assert type(got) is bool
            if isinstance(value, str):
                assert got == _parse_bool(value)
        elif action.type in (int, float) and action.nargs is None:
            assert type(got) is action.type


def _actions_of(parser, command):
    from bayesrm.cli.options import _subcommand_actions

    return _subcommand_actions(parser, command).values()


# ---- the sample cache ------------------------------------------------------------------------
cache_record = st.fixed_dictionaries({
    "prompt": st.sampled_from(["p0", "p1", "\u2028p2"]), "index": st.integers(0, 3),
    "text": st.one_of(word_text, text.filter(_valid_text)), "num_tokens": st.integers(0, 50), "finished": st.booleans()})


def _good_cache_record(item) -> bool:
    types = {"prompt": str, "index": int, "text": str, "num_tokens": int, "finished": bool}
    return isinstance(item, dict) and all(
        isinstance(item.get(k), t) and not (t is int and (isinstance(item[k], bool) or item[k] < 0))
        for k, t in types.items())


@fuzz(50)
@given(items=st.lists(st.one_of(cache_record, cache_record, st.sampled_from(BROKEN_LINES), json_value,
                                cache_record.map(lambda r: {**r, "finished": "false"}),
                                cache_record.map(lambda r: {k: v for k, v in r.items() if k != "text"})),
                      max_size=8),
       torn=st.integers(0, 30), data=st.data())
def test_sample_cache_files(items, torn, data):
    """Every good line is kept (the last one of a key wins), every bad one is dropped and counted,
    a torn last line is cut off, and nothing raises."""
    from bayesrm.generation.cache import Sample, SampleCache

    lines, expected, bad = [], {}, []
    for item in items:
        if isinstance(item, bytes):
            line = item
        else:
            line = json.dumps(item, ensure_ascii=data.draw(st.booleans())).encode("utf-8")
        if not line.strip():
            continue
        lines.append(line)
        if _good_cache_record(item):
            expected[(item["prompt"], item["index"])] = Sample(item["text"], item["num_tokens"], item["finished"])
        else:
            bad.append(len(lines))
    raw = b"\n".join(lines) + b"\n" if lines else b""
    tail = b'{"prompt": "p0", "index": 9, "te'[:torn] if torn else b""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "c.jsonl"
        path.write_bytes(raw + tail)
        cache = SampleCache(path)
        assert path.read_bytes() == raw  # the torn tail is gone, every whole line is still there
    assert {k: cache[k] for k in expected} == expected and len(cache) == len(expected)
    assert [n for n, _ in cache.dropped] == bad
