"""`bayesrm eval` with several models and files: results.json / results.md, PNGs, and an HTML page
that parses, embeds every PNG and holds the tables (untrained tiny models; numbers checked against
the library functions on the same predictions)."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser

import pytest

from bayesrm.cli.main import main
from bayesrm.data.loading import load_preferences
from bayesrm.evaluation.evaluate import evaluate_preferences
from bayesrm.models.reward_model import RewardModelConfig
from bayesrm.registry import load_scorer
from bayesrm.uncertainty.factory import build_model


class PageParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.images, self.tables, self.cells = [], [], 0, []

    def handle_starttag(self, tag, attrs):
        if tag not in ("img", "meta"):
            self.stack.append(tag)
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self.tables += tag == "table"

    def handle_endtag(self, tag):
        assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"

    def handle_data(self, data):
        if self.stack and self.stack[-1] == "td":
            self.cells.append(data)


@pytest.fixture
def files(tmp_path, toy_pairs):
    plain = tmp_path / "pairs.jsonl"
    plain.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r}) + "\n" for p, c, r in toy_pairs[:16]))
    shifted = tmp_path / "shifted.jsonl"
    shifted.write_text("".join(json.dumps({"prompt": "hello world", "chosen": f"w{i} w{i + 1} cat dog", "rejected": "no"}) + "\n"
                               for i in range(10)))
    rb = tmp_path / "rb.jsonl"
    rb.write_text("".join(json.dumps({"prompt": p, "chosen": c, "rejected": r, "subset": "alpacaeval-easy" if i % 2 else "donotanswer"}) + "\n"
                          for i, (p, c, r) in enumerate(toy_pairs[16:24])))
    rm = tmp_path / "rm.jsonl"
    rm.write_text("".join(json.dumps({"prompt": p, "chosen": [c, c + " w1", c + " w2"], "rejected": [r, r + " w1", r + " w2"],
                                      "domain": "chat"}) + "\n" for p, c, r in toy_pairs[24:30]))
    return plain, shifted, rb, rm


def test_eval_several_models_and_files_writes_tables_plots_and_html(tmp_path, tiny_bert_dir, files):
    plain, shifted, rb, rm = files
    cfg = RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=24)
    build_model("map", cfg, seed=1).save_pretrained(tmp_path / "map" / "model")
    build_model("lora-ensemble", cfg, members=3, seed=2).save_pretrained(tmp_path / "ens")
    out = tmp_path / "eval"
    argv = ["eval", "--model", str(tmp_path / "map" / "model"), str(tmp_path / "ens"), "--data", f"{plain}@all", str(rb), str(rm),
            "--shifted", str(shifted), "--shift-max", "8", "--out", str(out)]
    assert main(argv) == 0
    data = json.loads((out / "results.json").read_text())
    assert data["models"] == ["map", "ens"] and data["sets"] == ["pairs", "rb", "rm"]

    # the pairwise numbers are the library's on the same pairs
    ens = load_scorer(tmp_path / "ens")
    ref = evaluate_preferences(ens, load_preferences(plain).pairs).metrics
    assert data["results"]["ens"]["pairs"]["metrics"] == pytest.approx(ref)
    assert data["results"]["ens"]["pairs"]["metrics"]["nll_members"] is not None
    assert data["results"]["map"]["pairs"]["metrics"]["error_auroc"] == 0.5  # std 0 everywhere
    assert "nll_members" not in data["results"]["map"]["pairs"]["metrics"]
    assert data["results"]["map"]["rb"]["suite"]["suite"] == "rewardbench"
    assert set(data["results"]["map"]["rb"]["suite"]["sections"]) == {"Chat", "Safety"}
    assert data["results"]["ens"]["rm"]["suite"]["suite"] == "rm-bench" and "metrics" not in data["results"]["ens"]["rm"]
    assert data["shift"]["map"]["shift_auroc"] == 0.5 and data["shift"]["ens"]["n_shifted"] == 8
    assert 0 <= data["shift"]["ens"]["shift_auroc"] <= 1

    md = (out / "results.md").read_text()
    assert "| map | pairs |" in md and "| ens | rm | rm-bench |" in md and "Shift: AUROC" in md
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(data["images"]) and len(pngs) == 2 * 2 + 2  # reliability per (model, pair set) + coverage per set

    page = PageParser()
    page.feed((out / "report.html").read_text())
    page.close()
    assert page.stack == [] and page.tables == 4  # pairwise, ensembles, suites, shift
    assert len(page.images) == len(pngs)
    for src in page.images:
        assert base64.b64decode(src.removeprefix("data:image/png;base64,"))[:8] == b"\x89PNG\r\n\x1a\n"
    assert "rm-bench" in page.cells and "ens" in page.cells


def test_eval_user_errors(tmp_path, tiny_bert_dir, files, capsys):
    plain, _, _, _ = files
    cfg = RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=24)
    build_model("map", cfg).save_pretrained(tmp_path / "m")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "q", "chosen": ["a", "b", "c"], "rejected": ["d", "e"], "domain": "chat"}) + "\n")
    capsys.readouterr()
    assert main(["eval", "--model", str(tmp_path / "m"), "--data", str(bad), "--suite", "rm-bench", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (transformers may draw a loading bar first)
    assert err.startswith("bayesrm eval: error: ") and "bad.jsonl:1: field 'rejected'" in err
    assert main(["eval", "--model", str(tmp_path / "m"), "--data", f"{plain}@validation", "--out", str(tmp_path / "o")]) == 2
    assert "'validation' part of the split is empty" in capsys.readouterr().err
