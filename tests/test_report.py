"""The best-of-n report from a tiny synthetic set of curves."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch

from bayesrm.alignment.bon import BoNCurve, bon_curves
from bayesrm.evaluation.plots import plot_bon, plot_stat
from bayesrm.evaluation.report import load_curves, make_bon_report, stat_table, write_bon_report

NS = [1, 2, 4, 8]


@pytest.fixture(scope="module")
def curves():
    gen = torch.Generator().manual_seed(0)
    gold = torch.randn(6, 8, generator=gen)
    sigma = torch.rand(6, 8, generator=gen)
    proxy = gold + 2 * sigma * torch.randn(6, 8, generator=gen)
    return {
        "mean": bon_curves(proxy, gold, NS, n_boot=50, extra={"sigma": sigma}),
        "std:k=2": bon_curves(proxy, gold, NS, n_boot=50, select=proxy - 2 * sigma, extra={"sigma": sigma}),
    }


def _without(curve: BoNCurve, stat: str) -> BoNCurve:
    return replace(curve, stats={k: v for k, v in curve.stats.items() if k != stat})


def _png_shape(path):
    import matplotlib.image

    return matplotlib.image.imread(str(path)).shape


def test_make_bon_report_writes_everything(tmp_path, curves):
    paths = make_bon_report(
        tmp_path / "out", curves, settings={"N": 8, "ns": NS}, timings={"sampling": 1.5, "scoring": 0.25},
        seeds={"bootstrap": 0}, extra_sections=["## Notes\n\nsynthetic"], baseline="mean",
    )
    assert set(paths) == {"bon_plot", "uncertainty_plot", "curves", "report"}
    for key in ("bon_plot", "uncertainty_plot"):
        h, w, c = _png_shape(paths[key])
        assert h > 300 and w > 300 and c in (3, 4)
    text = paths["report"].read_text()
    assert "![gold and proxy reward against KL](bon.png)" in text and "## Notes" in text
    assert "| **total** | **1.8** |" in text and "| bootstrap | 0 |" in text
    # the gold table: one row per n, each method's mean and band as computed, the best in bold
    gold_section = text.split("## Gold reward of the pick")[1].split("##")[0]
    rows = [line for line in gold_section.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == len(NS)
    for n, row in zip(NS, rows):
        m = NS.index(n)
        cells = [c.strip() for c in row.strip("|").split("|")]
        values = {name: float(curves[name].gold.mean[m]) for name in curves}
        best = max(values, key=values.get)
        for name, cell in zip(curves, cells[2:]):
            band = curves[name].gold
            assert cell.strip("*") == f"{values[name]:.3f} [{float(band.lo[m]):.3f}, {float(band.hi[m]):.3f}]"
            assert cell.startswith("**") == (values[name] >= values[best] - 1e-9)
    # the gain table: std:k=2 minus mean, paired band, per n
    gain_section = text.split("## Gold gain over `mean`")[1].split("##")[0]
    gain_rows = [line for line in gain_section.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(gain_rows) == len(NS)
    diff = curves["std:k=2"].gold.mean - curves["mean"].gold.mean
    for m, row in enumerate(gain_rows):
        cell = row.strip("|").split("|")[2].strip()
        assert cell.startswith(f"{float(diff[m]):+.3f} [")
    assert not gain_rows[0].endswith("* |")  # n = 1: no difference, never significant
    # the curves file round-trips
    again = load_curves(paths["curves"])
    torch.testing.assert_close(again["std:k=2"].gold.mean, curves["std:k=2"].gold.mean)


def test_method_names_with_pipes_keep_the_table_shape(curves):
    named = {"std:k=2|log_sigmoid": curves["mean"], "mean": curves["std:k=2"]}
    rows = stat_table(named, "gold")
    assert rows[0].startswith("| n | KL | std:k=2\\|log_sigmoid | mean |")
    assert all(len(re.split(r"(?<!\\)\|", row)) == 6 for row in rows)  # "", n, KL, 2 methods, ""


def test_best_marked_only_for_gold(curves):
    proxy_rows = stat_table(curves, "proxy", mark_best=False)
    assert not any("**" in row for row in proxy_rows)
    gold_rows = stat_table(curves, "gold")
    assert all(row.count("**") >= 2 for row in gold_rows[2:])


def test_plots_and_errors(tmp_path, curves):
    assert _png_shape(plot_bon(curves, tmp_path / "a.png"))[0] > 300
    assert _png_shape(plot_stat({"mean": curves["mean"]}, tmp_path / "b.png"))[0] > 300
    with pytest.raises(ValueError, match="no curve has the statistic 'p_all'"):
        plot_stat(curves, tmp_path / "c.png", stat="p_all")
    with pytest.raises(ValueError, match=r"curves \['mean'\] have no statistic 'gold'"):
        plot_bon({"mean": _without(curves["mean"], "gold"), "std": curves["std:k=2"]}, tmp_path / "d.png")
    with pytest.raises(ValueError, match="at least one curve"):
        write_bon_report(tmp_path / "r.md", {}, {}, {})
    bad = tmp_path / "bad.json"
    bad.write_text('{"x": {"ns": [1]}}')
    with pytest.raises(ValueError, match="not a bayesrm best-of-n curves file"):
        load_curves(bad)


def test_cli_report_rebuilds_from_curves_json(tmp_path, curves, capsys):
    import argparse

    from bayesrm.cli import report as cli_report
    from bayesrm.evaluation.report import save_curves

    parser = argparse.ArgumentParser()
    cli_report.add_parser(parser.add_subparsers())
    saved = save_curves(tmp_path / "curves.json", curves)
    args = parser.parse_args(["report", "--curves", str(saved), "--out", str(tmp_path / "rep"), "--baseline", "mean",
                              "--methods", "std:k=2", "mean"])
    assert args.run(args) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| n | KL | std:k=2 | mean |" in text and "## Gold gain over `mean`" in text
    assert (tmp_path / "rep" / "bon.png").stat().st_size > 0
    bad = parser.parse_args(["report", "--curves", str(saved), "--out", str(tmp_path / "x"), "--methods", "nope"])
    with pytest.raises(ValueError, match="no curves named"):
        bad.run(bad)
