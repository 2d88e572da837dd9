"""CLI round trip on a tiny model: train -> score -> eval, --config YAML, and one-line user errors."""

import json

import pytest

from bayesrm.cli.main import build_parser, main


@pytest.fixture
def pairs_file(tmp_path, toy_pairs):
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in toy_pairs))
    return path


def train_args(data, backbone, out):
    return ["train", "--data", str(data), "--backbone", str(backbone), "--lora-r", "2", "--max-length", "24",
            "--max-steps", "25", "--learning-rate", "0.02", "--per-device-train-batch-size", "8",
            "--test-fraction", "0.25", "--out", str(out), "--use-cpu", "true"]


def test_train_score_eval_round_trip(pairs_file, tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(pairs_file, tiny_bert_dir, out)) == 0
    assert (out / "model" / "model.safetensors").exists() and (out / "reliability.png").exists()
    trained = json.loads((out / "metrics.json").read_text())
    assert trained["n"] == 12 and trained["accuracy"] > 0.8

    records = tmp_path / "records.jsonl"
    records.write_text(json.dumps({"prompt": "what do you think", "response": "it is good"}) + "\n"
                       + json.dumps({"prompt": "what do you think", "response": "it is terrible"}) + "\n")
    scored = tmp_path / "scored.jsonl"
    assert main(["score", "--model", str(out / "model"), "--input", str(records), "--output", str(scored)]) == 0
    rows = [json.loads(line) for line in scored.read_text().splitlines()]
    assert [r["response"] for r in rows] == ["it is good", "it is terrible"]
    assert rows[0]["reward"] > rows[1]["reward"] and rows[0]["reward_var"] == 0.0

    capsys.readouterr()
    assert main(["eval", "--model", str(out / "model"), "--data", str(pairs_file), "--test-fraction", "0.25",
                 "--out", str(tmp_path / "eval")]) == 0
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text()) == pytest.approx(trained)
    assert "accuracy=" in capsys.readouterr().out


def test_config_file_supplies_defaults_and_flags_win(pairs_file, tiny_bert_dir, tmp_path):
    config = tmp_path / "train.yaml"
    config.write_text(f"data: {pairs_file}\nbackbone: {tiny_bert_dir}\nlora-r: 2\nmax_length: 24\nmax_steps: 2\n"
                      "learning_rate: 0.5\n")
    args = build_parser().parse_args(["train", "--config", str(config), "--learning-rate", "0.01"])
    from bayesrm.cli.options import parse_with_config

    args = parse_with_config(build_parser(), ["train", "--config", str(config), "--learning-rate", "0.01"])
    assert args.learning_rate == 0.01 and args.max_steps == 2 and args.lora_r == 2 and args.data == str(pairs_file)


def test_user_errors_are_one_line_with_exit_2(tmp_path, tiny_bert_dir, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "chosen": "a", "rejected": "b"}\n{"prompt": "p", "chosen": "", "rejected": "b"}\n')
    code = main(train_args(bad, tiny_bert_dir, tmp_path / "out"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "bad.jsonl:2" in err and "chosen" in err
    assert main(["eval", "--model", str(tmp_path / "nowhere"), "--data", str(bad)]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for option in ["--lora-r", "--method", "--diversity", "--members", "--skip-invalid", "--learning-rate", "--test-fraction"]:
        assert option in text
    assert "(default:" in text and "LoRA rank" in text


def test_laplace_command_fits_on_the_training_split(pairs_file, tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(pairs_file, tiny_bert_dir, out)) == 0
    capsys.readouterr()
    assert main(["laplace", "--model", str(out / "model"), "--data", str(pairs_file), "--test-fraction", "0.25",
                 "--prior-precision", "auto"]) == 0
    assert "Laplace-LoRA on 36 pairs" in capsys.readouterr().err  # 48 pairs, 25% held out
    posterior = out / "model-laplace"
    assert main(["eval", "--model", str(posterior), "--data", str(pairs_file), "--test-fraction", "0.25",
                 "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 12 and metrics["mean_margin_std"] > 0
