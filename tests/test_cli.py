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
    assert main(["score", "--model", str(out / "model"), "--input", str(records), "--out", str(scored)]) == 0
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


def test_a_model_keeps_its_split_for_laplace_and_eval(pairs_file, tiny_bert_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(train_args(pairs_file, tiny_bert_dir, out) + ["--split-seed", "3"]) == 0
    trained = json.loads((out / "metrics.json").read_text())
    saved = json.loads((out / "model" / "config.json").read_text())["data_options"]
    assert saved["test_fraction"] == 0.25 and saved["split_seed"] == 3 and saved["data"] == str(pairs_file.resolve())
    assert (out / "checkpoints" / "train_log.jsonl").is_file()  # the Trainer's records go to a file, not the console
    assert "{'loss'" not in capsys.readouterr().out
    # no data or split options: eval uses the saved split (seed 3, 25% held out), so it reproduces train's numbers
    assert main(["eval", "--model", str(out / "model"), "--out", str(tmp_path / "eval0")]) == 0
    assert json.loads((tmp_path / "eval0" / "metrics.json").read_text()) == pytest.approx(trained)
    capsys.readouterr()
    assert main(["eval", "--model", str(out / "model"), "--split-seed", "0"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--split-seed 0 conflicts with the split the model was trained with (split_seed=3" in err
    assert main(["laplace", "--model", str(out / "model"), "--prior-precision", "auto"]) == 0
    assert "Laplace-LoRA on 36 pairs" in capsys.readouterr().err  # 48 pairs, 25% held out
    posterior = out / "model-laplace"
    assert json.loads((posterior / "config.json").read_text())["data_options"]["split_seed"] == 3
    assert main(["eval", "--model", str(posterior), "--test-fraction", "0.25", "--out", str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["n"] == 12 and metrics["mean_margin_std"] > 0


def test_option_files_are_checked_at_load(pairs_file, tmp_path, capsys):
    config = tmp_path / "train.yaml"
    cases = {
        "max_steps: '2'\n": r"train.yaml: max_steps: expected int, got str ('2')",
        "skip_invalid: 'false'\n": r"train.yaml: skip_invalid: expected true or false, got str ('false')",
        "lora_r: -1\n": r"train.yaml: lora_r must be >= 0, got -1",
        "learning_rat: 0.1\n": r"train.yaml: learning_rat: unknown option (did you mean 'learning_rate'?)",
        "preset: quick\n": r"train.yaml: preset: choose a preset with --preset",
        "method: lora_ensemble\n": r"train.yaml: method: expected one of",
    }
    for text, message in cases.items():
        config.write_text(f"data: {pairs_file}\n" + text)
        assert main(["train", "--config", str(config), "--out", str(tmp_path / "never")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (text, err)
    assert not (tmp_path / "never").exists()
    config.write_text("lora_r: 2\npresets:\n  small: {lora_r: 1, max_steps: 3}\n")
    from bayesrm.cli.options import parse_with_config

    args = parse_with_config(build_parser(), ["train", "--config", str(config), "--preset", "small"])
    assert args.lora_r == 1 and args.max_steps == 3


def test_plain_flags_in_option_files_go_through_the_typed_converter(tmp_path):
    """Flags that are no dataclass field (eval's --batch-size, --part, --shifted, switches) are checked like fields
    (a file's value is checked even where the command line wins)."""
    from bayesrm.cli.options import parse_with_config
    from bayesrm.config import ConfigError

    from bayesrm.cli.options import _flag_value, _subcommand_actions

    actions = _subcommand_actions(build_parser(), "eval")
    got = {k: _flag_value(actions[k], v, k) for k, v in
           {"batch_size": 8, "part": "validation", "shifted": ["a.jsonl"], "trust_remote_code": True}.items()}
    assert got == {"batch_size": 8, "part": "validation", "shifted": ["a.jsonl"], "trust_remote_code": True}
    assert _flag_value(actions["allow_external_paths"], False, "x") is False
    config = tmp_path / "eval.yaml"
    for text, message in {"batch_size: '8'\n": "eval.yaml: batch_size: expected int, got str ('8')",
                          "part: valid\n": "eval.yaml: part: expected one of 'test', 'validation', 'train', 'all'; got 'valid'",
                          "shifted: a.jsonl\n": "eval.yaml: shifted: expected a list (list[str]), got str",
                          "allow_external_paths: 'yes'\n": "eval.yaml: allow_external_paths: expected true or false"}.items():
        config.write_text(text)
        with pytest.raises(ConfigError) as info:
            parse_with_config(build_parser(), ["eval", "--model", "m", "--config", str(config)])
        assert message in str(info.value), (text, str(info.value))


PLAIN_FLAGS = {  # command -> (required flags, file values of flags that have a default, one of them given on the command line)
    "eval": (["--model", "m"], {"batch_size": 4, "part": "validation", "suite": "pairs", "shifted": ["s.jsonl"],
                                "shift_max": 7, "trust_remote_code": True}, ["--part", "test"]),
    "train": ([], {"overwrite": True, "resume": True}, ["--overwrite"]),
    "laplace": (["--model", "m"], {"trust_remote_code": True, "allow_external_paths": True}, ["--allow-external-paths"]),
    "score": (["--model", "m", "--input", "i"], {"trust_remote_code": True, "allow_external_paths": True},
              ["--trust-remote-code"]),
}


@pytest.mark.parametrize("command", sorted(PLAIN_FLAGS))
def test_option_files_set_plain_flags_that_have_a_default(command, tmp_path):
    """A plain flag's default does not hide the file's value; a flag given on the command line still wins, even
    when it gives the default itself (eval's --part test); switches in the file switch."""
    import yaml

    from bayesrm.cli.options import given, parse_with_config

    required, values, flag = PLAIN_FLAGS[command]
    defaults = vars(build_parser().parse_args([command, *required]))
    assert all(defaults[k] != v for k, v in values.items())  # each value differs from the flag's default
    config = tmp_path / "options.yaml"
    config.write_text(yaml.safe_dump(values))
    args = parse_with_config(build_parser(), [command, *required, "--config", str(config)])
    assert {k: getattr(args, k) for k in values} == values
    assert all(given(args, k) for k in values)
    # the command line wins over the file; the flags it leaves alone keep the file's values
    dest = flag[0].lstrip("-").replace("-", "_")
    on_line = parse_with_config(build_parser(), [command, *required, "--config", str(config), *flag])
    expected = {**values, dest: True if len(flag) == 1 else flag[1]}
    assert {k: getattr(on_line, k) for k in values} == expected
    # without the file every default stays, and given() does not count it
    plain = parse_with_config(build_parser(), [command, *required])
    assert {k: getattr(plain, k) for k in values} == {k: defaults[k] for k in values}
    assert not any(given(plain, k) for k in values)


def test_an_eval_option_file_reaches_the_run(tmp_path, capsys):
    """End to end: the file's batch_size is the one eval checks (before, the flag's default 32 hid it)."""
    config = tmp_path / "eval.yaml"
    config.write_text("batch_size: 0\n")
    assert main(["eval", "--model", str(tmp_path / "nowhere"), "--config", str(config)]) == 2
    assert "--batch-size must be positive" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "nowhere"), "--config", str(config), "--batch-size", "2"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_score_keeps_output_as_a_deprecated_spelling_of_out():
    args = build_parser().parse_args(["score", "--model", "m", "--input", "i", "--output", "o.jsonl"])
    assert args.output == "o.jsonl" and "out" not in vars(args)
    args = build_parser().parse_args(["score", "--model", "m", "--input", "i", "--out", "o.jsonl"])
    assert args.out == "o.jsonl"


def test_scenario_flags_override_fields_and_are_checked(capsys):
    from bayesrm.cli.options import nested_overrides
    from bayesrm.scenarios.config import load_scenario

    args = build_parser().parse_args(["bon", "--bon-prompts", "3", "--training-learning-rate", "0.1", "--seed", "4",
                                      "--sampling-temperature", "0.7", "--model-lora-r", "2", "--prompts-source", "p.txt"])
    config = load_scenario(args.config, args.preset, nested_overrides(args, ("seed",)))
    assert (config.bon.prompts, config.training.learning_rate, config.seed, config.sampling.temperature) == (3, 0.1, 4, 0.7)
    assert config.model.lora_r == 2 and config.prompts.source == "p.txt" and config.bon.n_samples == 32
    assert main(["bon", "--bon-n-samples", "1"]) == 2
    assert "bon: needs n_samples >= 2" in capsys.readouterr().err
    rl = build_parser().parse_args(["rl", "--config", "sentiment", "--kl-coef", "0.2", "--chat-template", "false", "--steps", "5"])
    assert nested_overrides(rl)["rl"] == {"kl_coef": 0.2, "chat_template": False, "steps": 5}


def test_known_third_party_warnings_are_filtered():
    import warnings

    from bayesrm.cli.main import quiet_warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.resetwarnings()
        warnings.simplefilter("always")
        quiet_warnings()
        warnings.warn_explicit("`x` is deprecated", FutureWarning, "modeling_utils.py", 1, module="transformers.modeling_utils")
        warnings.warn_explicit("`y` is deprecated", FutureWarning, "module.py", 1, module="torch.nn.modules.module")
        warnings.warn_explicit("ours", FutureWarning, "bon.py", 1, module="bayesrm.scenarios.bon")
    assert [str(w.message) for w in seen] == ["ours"]
