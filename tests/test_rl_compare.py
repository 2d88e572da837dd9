"""Comparison of RL runs (bayesrm.evaluation.rl_compare and `bayesrm report --rl`) on hand-made logs."""

import json

import pytest

from bayesrm.evaluation.rl_compare import kl_bins, load_runs, moving_average, summarise, write_comparison
from bayesrm.cli.main import main


def write_log(run_dir, kls, golds, proxies):
    run_dir.mkdir(parents=True)
    with (run_dir / "log.jsonl").open("w") as f:
        for step, (kl, g, p) in enumerate(zip(kls, golds, proxies), 1):
            f.write(json.dumps({"step": step, "kl_k3": kl, "gold": g, "proxy": p, "reward": p}) + "\n")
    return run_dir


def test_moving_average_is_trailing_and_skips_missing_values():
    assert moving_average([1.0, 3.0, None, 5.0], window=2) == [1.0, 2.0, 2.0, 4.0]
    out = moving_average([None, 2.0], window=3)
    assert out[0] != out[0] and out[1] == 2.0  # NaN before the first value


def test_bins_stop_at_the_kl_every_method_reached_and_means_are_per_bin(tmp_path):
    a = write_log(tmp_path / "a", kls=[0.0, 0.1, 0.2, 0.3, 0.4], golds=[1, 2, 3, 4, 5], proxies=[0, 0, 0, 0, 1])
    b = write_log(tmp_path / "b", kls=[0.0, 0.1, 0.2], golds=[10, 20, 30], proxies=[1, 1, 1])
    runs = load_runs({"A": [a], "B": [b]})
    edges = kl_bins(runs, n_bins=2)
    assert edges == pytest.approx([0.0, 0.1, 0.2])
    s = summarise("A", runs["A"], edges, window=2)
    # bin [0, 0.1): step 1 only; bin [0.1, 0.2]: steps 2 and 3 (the top edge is inclusive); KL 0.3, 0.4 are beyond
    assert s.n_by_bin == [1, 2]
    assert s.gold_by_bin == pytest.approx([1.0, 2.5])
    assert (s.gold_start, s.gold_end) == pytest.approx((1.5, 4.5))
    assert (s.proxy_start, s.proxy_end, s.kl_end) == pytest.approx((0.0, 0.5, 0.35))
    assert s.best_gold == pytest.approx(4.5)


def test_seeds_are_pooled(tmp_path):
    s0 = write_log(tmp_path / "s0", kls=[0.0, 0.2], golds=[1, 3], proxies=[0, 0])
    s1 = write_log(tmp_path / "s1", kls=[0.0, 0.2], golds=[3, 5], proxies=[0, 0])
    runs = load_runs({"M": [s0, s1]})
    s = summarise("M", runs["M"], kl_bins(runs, 1), window=1)
    assert s.seeds == 2 and s.n_by_bin == [4]
    assert s.gold_by_bin == pytest.approx([3.0])
    assert (s.gold_start, s.gold_end) == pytest.approx((2.0, 4.0))


def test_cli_writes_plot_table_and_json(tmp_path, capsys):
    for name in ("m0", "m1", "u0"):
        write_log(tmp_path / name, kls=[0.0, 0.05, 0.1, 0.2], golds=[0.3, 0.35, 0.2, 0.1], proxies=[0, 0.1, 0.2, 0.4])
    out = tmp_path / "cmp"
    code = main(["report", "--rl", f"map={tmp_path / 'm0'},{tmp_path / 'm1'}", f"up={tmp_path / 'u0'}",
                 "--out", str(out), "--window", "2", "--kl-bins", "2"])
    assert code == 0
    assert (out / "rl_comparison.png").stat().st_size > 0
    saved = json.loads((out / "rl_comparison.json").read_text())
    assert [m["method"] for m in saved["methods"]] == ["map", "up"]
    assert saved["methods"][0]["seeds"] == 2
    table = (out / "rl_comparison.md").read_text()
    assert "| map | 2 | 4 |" in table and "| up | 1 | 4 |" in table


def test_cli_reports_runs_without_gold_and_names_their_logs(tmp_path, capsys):
    """`gold: null` logs (and logs without a gold key) used to give a TypeError."""
    write_log(tmp_path / "g", kls=[0.0, 0.1, 0.2], golds=[0.1, 0.2, 0.3], proxies=[0.0, 0.1, 0.2])
    write_log(tmp_path / "n", kls=[0.0, 0.1, 0.2], golds=[None, None, None], proxies=[0.0, 0.2, 0.4])
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / "log.jsonl").write_text("".join(json.dumps({"step": i, "kl_k3": 0.1 * i, "proxy": 0.5}) + "\n" for i in (1, 2)))
    out = tmp_path / "cmp"
    code = main(["report", "--rl", f"gold={tmp_path / 'g'}", f"nogold={tmp_path / 'n'},{tmp_path / 'k'}",
                 "--out", str(out), "--window", "1", "--kl-bins", "1"])
    assert code == 0
    err = capsys.readouterr().err
    assert str(tmp_path / "n" / "log.jsonl") in err and str(tmp_path / "k" / "log.jsonl") in err
    assert str(tmp_path / "g" / "log.jsonl") not in err
    saved = json.loads((out / "rl_comparison.json").read_text())
    gold, nogold = saved["methods"]
    assert gold["gold_end"] == pytest.approx(0.3) and nogold["gold_end"] is None and nogold["best_gold"] is None
    assert nogold["proxy_end"] == pytest.approx((0.4 + 0.5) / 2)  # per-seed means of the last step, then over seeds
    assert nogold["n_by_bin"] == [5] and nogold["gold_by_bin"] == [None]  # 3 steps of n + 2 of k, none with gold
    table = (out / "rl_comparison.md").read_text()
    assert "| nogold | 2 | 2 | " in table and "- -> -" in table and "no gold reward" in table.lower()


def test_cli_names_a_missing_log(tmp_path, capsys):
    code = main(["report", "--rl", f"map={tmp_path / 'nowhere'}", "--out", str(tmp_path / "o")])
    assert code == 2
    assert "log.jsonl" in capsys.readouterr().err
    assert main(["report", "--rl", "map", "--out", str(tmp_path / "o")]) == 2


def test_write_comparison_refuses_an_empty_method(tmp_path):
    with pytest.raises(ValueError, match="no run directories"):
        write_comparison({"map": []}, tmp_path)
