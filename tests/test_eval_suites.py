"""RewardBench v1 / v2 and RM-Bench scoring on hand-made files with known answers.

The scorer is a lookup table: each response text carries its reward, so every expected number
below is worked out by hand from the file.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bayesrm.data.errors import DataError
from bayesrm.evaluation.suites import (
    RB1_EXAMPLE_COUNTS,
    best_of_k_credit,
    load_suite,
    rewardbench_scores,
    rm_bench_matrix,
    score_suite,
    sniff_suite,
)
from bayesrm.types import RewardPrediction


class TableScorer:
    """Reward = the number after 'r=' in the response."""

    def score(self, prompts, responses, batch_size=32, progress=False):
        assert len(prompts) == len(responses)
        return RewardPrediction.point(torch.tensor([float(r.split("r=")[1]) for r in responses]))


def write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def rb1(subset, chosen, rejected):
    return {"prompt": "q", "chosen": f"c r={chosen}", "rejected": f"x r={rejected}", "subset": subset}


def test_rewardbench_v1_section_weights_and_strict_ties(tmp_path):
    records = [
        # Chat: alpacaeval-easy 2/2 right (weight 100), mt-bench-easy 0/1 (a tie loses, weight 28)
        rb1("alpacaeval-easy", 2, 1), rb1("alpacaeval-easy", 3, 0), rb1("mt-bench-easy", 1, 1),
        # Reasoning: math-prm 1/2 (weight 984), hep-python 1/1 (weight 164)
        rb1("math-prm", 1, 0), rb1("math-prm", 0, 1), rb1("hep-python", 5, 4),
        # Safety: donotanswer 0/1 (weight 136)
        rb1("donotanswer", -1, 0),
        # a prior set, half weight in the score
        rb1("shp", 1, 0),
    ]
    suite = load_suite(write(tmp_path / "rb.jsonl", records))
    assert suite.kind == "rewardbench" and sniff_suite(tmp_path / "rb.jsonl") == "rewardbench"
    out = score_suite(TableScorer(), suite)
    chat = (100 * 1.0 + 28 * 0.0) / 128
    reasoning = (984 * 0.5 + 164 * 1.0) / (984 + 164)
    safety = 0.0
    assert out["subsets"]["mt-bench-easy"] == 0.0
    assert out["sections"]["Chat"] == pytest.approx(chat)
    assert out["sections"]["Reasoning"] == pytest.approx(reasoning)
    assert out["sections"]["Safety"] == pytest.approx(safety)
    assert out["sections"]["Prior Sets"] == 1.0
    assert out["score"] == pytest.approx((chat + reasoning + safety + 0.5 * 1.0) / 3.5)
    assert out["n"] == 8


def test_rewardbench_v1_unknown_subsets_form_other():
    out = rewardbench_scores(["mine", "mine", "yours", "alpacaeval-easy"], [1, 0, 1, 1], [0, 1, 0, 0])
    # Other: mine 1/2 (2 pairs), yours 1/1 (1 pair), weighted by their counts in the file
    assert out["sections"]["Other"] == pytest.approx((2 * 0.5 + 1 * 1.0) / 3)
    assert out["score"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert "mine" not in RB1_EXAMPLE_COUNTS


def test_best_of_k_credit_splits_ties():
    assert best_of_k_credit([3], [1, 2, 0]) == 1.0
    assert best_of_k_credit([2], [1, 2, 0]) == 0.5
    assert best_of_k_credit([2], [2, 2, 0]) == pytest.approx(1 / 3)
    assert best_of_k_credit([1], [1, 2, 0]) == 0.0
    assert best_of_k_credit([2, 2], [2, 0]) == pytest.approx(2 / 3)  # two chosen tied with one rejected


def test_rewardbench2_best_of_4(tmp_path):
    def rec(subset, chosen, rejected):
        return {"prompt": [{"role": "user", "content": "q"}], "chosen": [f"c r={c}" for c in chosen],
                "rejected": [f"x r={r}" for r in rejected], "subset": subset, "id": 0}

    records = [
        rec("Factuality", [5], [1, 2, 3]),   # 1
        rec("Factuality", [3], [1, 3, 3]),   # 1/3
        rec("Math", [0], [1, 2, 3]),          # 0
        rec("Math", [2], [2, 1, 0]),          # 1/2
        rec("Ties", [4, 4, 1], [4, 0]),       # 2/3
    ]
    out = score_suite(TableScorer(), load_suite(write(tmp_path / "rb2.jsonl", records)))
    assert out["suite"] == "rewardbench2"
    assert out["subsets"] == pytest.approx({"Factuality": (1 + 1 / 3) / 2, "Math": 0.25, "Ties": 2 / 3})
    assert out["score"] == pytest.approx(((1 + 1 / 3) / 2 + 0.25 + 2 / 3) / 3)


def test_rm_bench_style_matrix(tmp_path):
    # prompt 1: chosen rewards (1, 2, 3), rejected (0, 2.5, 4)
    # prompt 2: chosen (5, 5, 5), rejected (5, 0, 0) -> ties are losses
    records = [
        {"prompt": "a", "chosen": ["r=1", "r=2", "r=3"], "rejected": ["r=0", "r=2.5", "r=4"], "domain": "chat"},
        {"prompt": "b", "chosen": ["r=5", "r=5", "r=5"], "rejected": ["r=5", "r=0", "r=0"], "domain": "math"},
    ]
    suite = load_suite(write(tmp_path / "rm.jsonl", records))
    assert suite.kind == "rm-bench"
    m1 = np.array([[1, 0, 0], [1, 0, 0], [1, 1, 0]], dtype=float)
    m2 = np.array([[0, 1, 1], [0, 1, 1], [0, 1, 1]], dtype=float)
    np.testing.assert_array_equal(rm_bench_matrix(np.array([[1, 2, 3]]), np.array([[0, 2.5, 4]])), m1)
    out = score_suite(TableScorer(), suite)
    m = (m1 + m2) / 2
    assert np.allclose(out["matrix"], m)
    assert out["hard"] == pytest.approx((m[0, 1] + m[0, 2] + m[1, 2]) / 3)
    assert out["normal"] == pytest.approx(np.trace(m) / 3)
    assert out["easy"] == pytest.approx((m[1, 0] + m[2, 0] + m[2, 1]) / 3)
    assert out["score"] == pytest.approx(m.mean())
    assert out["domains"]["chat"]["hard"] == 0.0 and out["domains"]["chat"]["easy"] == 1.0
    assert out["domains"]["math"]["normal"] == pytest.approx(2 / 3)


def test_bad_suite_records_name_line_and_field(tmp_path):
    good = {"prompt": "a", "chosen": ["r=1", "r=2", "r=3"], "rejected": ["r=0", "r=2", "r=4"], "domain": "chat"}
    bad = dict(good, rejected=["r=0", "r=2"])
    with pytest.raises(DataError, match=r"rm.jsonl:2: field 'rejected': expected 3 responses"):
        load_suite(write(tmp_path / "rm.jsonl", [good, bad]))
    with pytest.raises(DataError, match=r"rb.jsonl:1: field 'subset': missing"):
        load_suite(write(tmp_path / "rb.jsonl", [{"prompt": "q", "chosen": ["a"], "rejected": ["b"]}]), "rewardbench2")
    with pytest.raises(DataError, match="not a suite record"):
        load_suite(write(tmp_path / "plain.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}]))
    assert sniff_suite(tmp_path / "plain.jsonl") is None
