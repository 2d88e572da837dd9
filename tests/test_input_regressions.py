"""Regression tests, one per defect found in the user-file readers and the CLI's handling of them
(issue 16 and the fuzz tests in test_fuzz_*.py). Each failed before its fix."""

from __future__ import annotations

import gzip
import json
import shutil
import zlib
from pathlib import Path

import pytest

from bayesrm.cli.main import main
from bayesrm.data.errors import DataError
from bayesrm.data.loading import load_preferences, read_scoring_records
from bayesrm.data.prompts import load_prompts

GOOD = '{"prompt": "what is it", "chosen": "it is good", "rejected": "it is bad"}\n'
TINY_TRAIN = ["--lora-r", "2", "--max-length", "24", "--max-steps", "1", "--use-cpu", "true"]


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


# ---- lone UTF-16 surrogates (they crashed inside the tokenizer, in train and score) ----------------
@pytest.mark.parametrize("record", [
    '{"prompt": "a\\ud800b", "chosen": "good", "rejected": "bad"}',
    '{"prompt": "a", "chosen": "go\\udfffod", "rejected": "bad"}',
    '{"prompt": [{"role": "user", "content": "\\ud83d"}], "chosen": "good", "rejected": "bad"}',
    '{"chosen": "\\n\\nHuman: hi\\n\\nAssistant: \\udc00", "rejected": "\\n\\nHuman: hi\\n\\nAssistant: no"}',
])
def test_lone_surrogate_is_a_located_data_error_or_a_counted_skip(tmp_path, record):
    path = tmp_path / "d.jsonl"
    first = GOOD if "prompt" in record else '{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b", "rejected": "\\n\\nHuman: a\\n\\nAssistant: c"}\n'
    path.write_text(first + record + "\n")
    with pytest.raises(DataError, match=rf"d\.jsonl:2: field '\w+': .*lone surrogate") as info:
        load_preferences(path)
    assert info.value.reason == "invalid unicode"
    result = load_preferences(path, skip_invalid=True)
    assert len(result) == 1 and result.skip_reasons == {"invalid unicode": 1}


def test_lone_surrogate_in_train_and_score_is_one_line(tmp_path, tiny_bert_dir, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text(GOOD * 4 + '{"prompt": "x\\ud800", "chosen": "a", "rejected": "b"}\n')
    assert main(["train", "--data", str(data), "--backbone", str(tiny_bert_dir), "--out", str(tmp_path / "r"),
                 *TINY_TRAIN]) == 2
    assert f"{data}:5: field 'prompt'" in one_error_line(capsys)
    records = tmp_path / "in.jsonl"
    records.write_text('{"prompt": "p", "response": "fine"}\n{"prompt": "p", "response": "\\udc80"}\n')
    assert main(["score", "--model", str(tmp_path / "none"), "--input", str(records)]) == 2
    assert f"{records}:2: field 'response'" in one_error_line(capsys)
    with pytest.raises(DataError, match="lone surrogate"):
        read_scoring_records(records)


def test_lone_surrogate_in_a_prompt_file(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "fine"}\n{"prompt": "\\ud800"}\n')
    with pytest.raises(DataError, match=r"p\.jsonl:2: field 'prompt': lone surrogate"):
        load_prompts(path)


# ---- deep nesting and over-long numbers ---------------------------------------------------------------
@pytest.mark.parametrize("name", ["d.jsonl", "d.json", "p.jsonl", "p.json"])
def test_json_nested_100k_deep_is_a_data_error(tmp_path, name):
    path = tmp_path / name
    path.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    with pytest.raises(DataError, match="nested too deeply") as info:
        (load_prompts if name.startswith("p") else load_preferences)(path)
    assert str(path) in str(info.value)


def test_over_long_integers(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(GOOD.replace("}", ', "margin": 1' + "0" * 400 + "}")
                    + GOOD.replace("}", ', "margin": 1' + "0" * 5000 + "}"))
    with pytest.raises(DataError, match=r"d\.jsonl:1: field 'margin': margin must be finite, got inf"):
        load_preferences(path)  # was OverflowError: int too large to convert to float
    result = load_preferences(path, skip_invalid=True)
    assert result.skip_reasons == {"non-finite margin": 1, "malformed JSON": 1}  # the 5000 digits: a ValueError before


# ---- damaged files ---------------------------------------------------------------------------------
def test_corrupt_deflate_stream_is_a_data_error(tmp_path):
    """zlib.error is not an OSError; it escaped as a traceback."""
    raw = gzip.compress(GOOD.encode() * 200, mtime=0)
    path = tmp_path / "d.jsonl.gz"
    hits = 0
    for pos in range(10, len(raw) - 8):
        bad = bytearray(raw)
        bad[pos] ^= 0x55
        try:
            gzip.decompress(bytes(bad))
        except (OSError, EOFError):
            continue  # CRC and length errors were already handled
        except zlib.error:
            hits += 1
            path.write_bytes(bytes(bad))
            with pytest.raises(DataError, match="cannot read") as info:
                load_preferences(path)
            assert str(path) in str(info.value)
    assert hits > 0


def test_parquet_with_invalid_utf8_in_a_page_is_a_data_error(tmp_path):
    """Bytes flipped in an uncompressed string page gave a bare UnicodeDecodeError naming no file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"prompt": "p", "chosen": "good" * 20, "rejected": "bad"}] * 5), path,
                   compression="none")
    raw = path.read_bytes()
    at = raw.index(b"good")
    path.write_bytes(raw[:at] + b"\xff\xfe" + raw[at + 2:])
    with pytest.raises(DataError, match="cannot read as Parquet") as info:
        load_preferences(path)
    assert str(path) in str(info.value)


def test_library_messages_with_newlines_become_one_line(tmp_path):
    path = tmp_path / "d.parquet"
    path.write_bytes(b"PAR1" + b"\x00" * 64 + b"PAR1")  # Arrow's thrift error ends in a newline
    with pytest.raises(DataError) as info:
        load_preferences(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_an_empty_saved_dataset_is_a_data_error(tmp_path):
    import datasets

    datasets.Dataset.from_dict({"prompt": [], "chosen": [], "rejected": []}).save_to_disk(str(tmp_path / "ds"))
    with pytest.raises(DataError, match="cannot read as a saved Hugging Face dataset"):
        load_preferences(tmp_path / "ds")  # was IndexError from inside datasets


def test_prompt_file_invalid_utf8_and_bom(tmp_path):
    bad = tmp_path / "p.txt"
    bad.write_bytes(b"fine\nalso fine\n\xff broken\n")
    with pytest.raises(DataError, match=r"p\.txt:3: invalid UTF-8"):
        load_prompts(bad)
    bom = tmp_path / "b.jsonl"
    bom.write_bytes(b'\xef\xbb\xbf{"prompt": "first"}\r\n{"prompt": "second"}\r\n')
    assert load_prompts(bom) == ["first", "second"]
    txt = tmp_path / "b.txt"
    txt.write_bytes(b"\xef\xbb\xbffirst\r\nsecond\n")
    assert load_prompts(txt) == ["first", "second"]


# ---- --config files and option values -------------------------------------------------------------
@pytest.mark.parametrize("command", [["train"], ["score", "--model", "m", "--input", "i"], ["eval", "--model", "m"]])
@pytest.mark.parametrize("content, message", [
    (None, "cannot read config (No such file or directory)"),
    (b"data: \xff\n", ":1: invalid UTF-8"),
    (b"- a\n- b\n", "must be a mapping of key: value, got list"),
    (b"a: [1, 2\n", "invalid YAML"),
    (b"[" * 2000 + b"]" * 2000, "nested too deeply"),
])
def test_missing_or_invalid_config_file_is_one_line(tmp_path, capsys, command, content, message):
    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_bytes(content)
    assert main([command[0], "--config", str(path), *command[1:]]) == 2
    line = one_error_line(capsys)
    assert str(path) in line and message in line


def test_config_bom_is_ignored(tmp_path):
    from bayesrm.fileio import read_yaml_mapping

    path = tmp_path / "c.yaml"
    path.write_bytes(b"\xef\xbb\xbfskip_invalid: true\r\nmax_steps: 3\r\n")
    assert read_yaml_mapping(path) == {"skip_invalid": True, "max_steps": 3}


def _train_args(config: Path):
    from bayesrm.cli.main import build_parser
    from bayesrm.cli.options import parse_with_config

    return parse_with_config(build_parser(), ["train", "--config", str(config)])


def test_config_values_are_typed_not_truthy(tmp_path, capsys):
    # "false" once counted as true; option files are YAML-typed like scenario files: a quoted
    # boolean is refused with the file and key named, while numbers written as text are read.
    path = tmp_path / "c.yaml"
    path.write_text('skip_invalid: "false"\n')
    assert main(["train", "--config", str(path)]) == 2
    assert f"{path}: skip_invalid: expected true or false, got str ('false')" in one_error_line(capsys)
    path.write_text('skip_invalid: false\nuse_cpu: true\nmax_steps: 2\nlearning_rate: "1e-3"\ncolumns: [prompt=q]\n')
    args = _train_args(path)
    assert args.skip_invalid is False
    assert args.use_cpu is True and args.max_steps == 2 and args.learning_rate == 1e-3
    assert args.columns == ["prompt=q"]


@pytest.mark.parametrize("content, message", [
    ("skip_invalid: maybe\n", "skip_invalid: expected true or false, got str ('maybe')"),
    ("skip_invalid: 1\n", "skip_invalid: expected true or false, got int (1)"),
    ("max_steps: 2.5\n", "max_steps: expected int, got float (2.5)"),
    ("max_steps: x\n", "max_steps: expected int"),
    ("learning_rate: true\n", "learning_rate: expected float, got bool (True)"),
    ("columns: [null]\n", "columns[0]: expected str, got NoneType (None)"),
    ("format: {a: 1}\n", "format: expected one of 'auto', 'standard', 'hh'"),
])
def test_config_values_that_do_not_convert_name_file_and_key(tmp_path, capsys, content, message):
    path = tmp_path / "c.yaml"
    path.write_text(content)
    # --data names no file, so that a value let through would fail fast (not train on the embedded data)
    assert main(["train", "--config", str(path), "--data", str(tmp_path / "none.jsonl")]) == 2
    line = one_error_line(capsys)
    assert f"{path}: {message}" in line


# ---- score --output ----------------------------------------------------------------------------------
def test_score_output_directory_is_refused_before_scoring(tmp_path, capsys):
    records = tmp_path / "in.jsonl"
    records.write_text('{"prompt": "p", "response": "r"}\n')
    # the model does not exist: the --out check must come first, before any loading or scoring
    assert main(["score", "--model", str(tmp_path / "no_model"), "--input", str(records), "--out", str(tmp_path)]) == 2
    assert "is a directory" in one_error_line(capsys)
    missing = tmp_path / "nowhere" / "out.jsonl"
    assert main(["score", "--model", str(tmp_path / "no_model"), "--input", str(records), "--out", str(missing)]) == 2
    assert "does not exist" in one_error_line(capsys)


# ---- unclear messages --------------------------------------------------------------------------------
@pytest.fixture
def saved_model(tmp_path, tiny_bert_dir):
    from bayesrm.models.reward_model import RewardModel, RewardModelConfig

    out = tmp_path / "model"
    RewardModel.from_config(RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=24), seed=0).save_pretrained(out)
    return out


def test_checkpoint_config_without_model_names_file_and_field(tmp_path, saved_model, capsys):
    from bayesrm.models.checkpoint import load_checkpoint, save_checkpoint

    # a checkpoint written (with valid checksums) without its 'model' field; a hand edit would
    # be caught earlier by the checksum ("edited after saving")
    meta, tensors = load_checkpoint(saved_model)
    fingerprint = meta.pop("backbone_fingerprint", None)
    for key in ("bayesrm_kind", "format_version", "weights_sha256", "model"):
        meta.pop(key, None)
    bare = tmp_path / "bare"
    save_checkpoint(bare, "reward_model", meta, tensors, fingerprint)
    saved_model, config = bare, bare / "config.json"
    records = tmp_path / "in.jsonl"
    records.write_text('{"prompt": "p", "response": "r"}\n')
    assert main(["score", "--model", str(saved_model), "--input", str(records)]) == 2
    assert f"{config}: field 'model' missing" in one_error_line(capsys)  # was 'error: model'


def test_a_bare_key_error_reads_as_a_missing_key(monkeypatch, tmp_path, capsys):
    import bayesrm.cli.score as score

    def broken(args):
        raise KeyError("gold")

    monkeypatch.setattr(score, "run", broken)
    records = tmp_path / "in.jsonl"
    records.write_text('{"prompt": "p", "response": "r"}\n')
    assert main(["score", "--model", "m", "--input", str(records)]) == 2
    assert one_error_line(capsys).endswith("error: missing key 'gold'")


@pytest.mark.parametrize("content, message", [
    ("{}", "holds no curves"),
    ('{"m": {"ns": [1], "kl": [0], "n_samples": 2, "stats": {}}}', "needs non-empty ns"),
    ('{"m": {"ns": [], "kl": [], "n_samples": 2, "stats": {"gold": {"mean": [], "lo": [], "hi": [], "per_prompt": []},'
     ' "proxy": {"mean": [], "lo": [], "hi": [], "per_prompt": []}}}}', "needs non-empty ns"),
    ("[1, 2]", "not a bayesrm best-of-n curves file"),
])
def test_report_curves_file_is_validated(tmp_path, capsys, content, message):
    path = tmp_path / "curves.json"
    path.write_text(content)
    assert main(["report", "--curves", str(path), "--out", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys)
    assert str(path) in line and message in line


def test_report_rl_log_without_kl_names_the_file(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_text('{"step": 1, "gold": 0.5, "proxy": 0.1}\n')
    assert main(["report", "--rl", f"m={run}", "--out", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys)
    assert str(run / "log.jsonl") in line and "finite 'kl_k3'" in line  # was 'max() arg is an empty sequence'


@pytest.mark.parametrize("content, message", [
    (b'{"step": 1, "kl_k3": 0.1}\n{"step": 2, "note": "\xff\xfe"}\n', ":2: not valid UTF-8 (column 22)"),  # was a traceback
    (b'{"step": 1, "kl_k3": 0.1}\n[1, 2]\n', ":2: expected a JSON object, got list"),
    (b'{"step": 1, "kl_k3": 0.1}\n{"step": 2,\n', ":2: corrupt JSON"),
])
def test_report_rl_log_with_a_bad_line_names_file_and_line(tmp_path, capsys, content, message):
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.jsonl").write_bytes(content)
    assert main(["report", "--rl", f"m={run}", "--out", str(tmp_path / "out")]) == 2
    line = one_error_line(capsys)
    assert f"{run / 'log.jsonl'}{message}" in line, line


def test_max_pairs_zero_is_refused_not_all(tmp_path, capsys):
    # --max-pairs 0 once meant "all pairs" (a falsy check); none is the only "all"
    assert main(["train", "--max-pairs", "0", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")]) == 2
    assert "max_pairs must be >= 1, or none for all pairs; got 0" in one_error_line(capsys)


def test_scoring_output_is_written_whole(tmp_path, saved_model):
    records = tmp_path / "in.jsonl"
    records.write_text('{"prompt": "p", "response": "good", "id": 1}\n{"prompt": "p", "response": "bad", "id": 2}\n')
    out = tmp_path / "out.jsonl"
    assert main(["score", "--model", str(saved_model), "--input", str(records), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == [1, 2] and not list(tmp_path.glob(".out.jsonl.*"))


def test_scoring_a_lone_surrogate_through_the_library_is_a_value_error(tiny_bert_dir):
    """Loaders refuse such text; the library API (model.score) says what is wrong instead of a TypeError."""
    from bayesrm.models.reward_model import RewardModel, RewardModelConfig

    model = RewardModel.from_config(RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=24), seed=0)
    with pytest.raises(ValueError, match=r"lone surrogate '\\ud800' at character 2"):
        model.score(["hi"], ["ok\ud800"])
    assert model.score(["hi"], ["ok"]).mean.shape == (1,)
