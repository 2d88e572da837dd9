"""Metrics against hand-computed values, brute force and Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bayesrm.evaluation import metrics as M
from bayesrm.evaluation.calibration import reliability_diagram


def sig(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_preference_probability_closed_forms():
    p = M.preference_probability(torch.tensor([0.0, math.log(3.0), -math.log(3.0)]))
    assert p.dtype == np.float64 and np.allclose(p, [0.5, 0.75, 0.25], atol=1e-12)
    # var = 8 / pi: the margin is divided by sqrt(2)
    p = M.preference_probability(np.array([1.0, -2.0]), np.array([8 / math.pi, 0.0]))
    assert np.allclose(p, [sig(1 / math.sqrt(2)), sig(-2.0)], atol=1e-12)
    assert np.all(np.isfinite(M.preference_probability([1e4, -1e4]))) and M.preference_probability([-800.0])[0] >= 0


def test_probit_approximation_matches_monte_carlo():
    rng = np.random.default_rng(0)
    z = rng.standard_normal(200_000)
    mu = np.array([-3.0, -1.0, 0.0, 0.5, 2.0, 4.0])
    for var in (0.0, 0.5, 2.0, 8.0, 25.0):
        mc = np.array([np.mean(1 / (1 + np.exp(-(m + math.sqrt(var) * z)))) for m in mu])  # E[sigmoid(f)]
        approx = M.preference_probability(mu, np.full_like(mu, var))
        assert np.max(np.abs(mc - approx)) < 0.012, var
    # uncertainty pulls the probability towards 1/2
    assert M.preference_probability([2.0], [4.0])[0] < M.preference_probability([2.0])[0]


def test_accuracy_nll_brier_by_hand():
    assert M.accuracy(torch.tensor([1.0, -1.0, 0.0, 2.0])) == pytest.approx((1 + 0 + 0.5 + 1) / 4)
    assert M.bt_nll([0.5, 0.25]) == pytest.approx(-(math.log(0.5) + math.log(0.25)) / 2)
    assert M.brier_score([0.5, 0.25, 1.0]) == pytest.approx((0.25 + 0.5625 + 0.0) / 3)
    assert math.isfinite(M.bt_nll([0.0, 1.0]))  # a certain mistake costs a lot, but not inf
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        M.brier_score([0.5, 1.5])
    with pytest.raises(ValueError, match="empty"):
        M.accuracy([])


def test_ece_on_six_probabilities_by_hand():
    p = [0.95, 0.9, 0.3, 0.55, 0.52, 0.1]
    # confidence max(p, 1-p) = .95 .9 .7 .55 .52 .9; correct (p > .5) = 1 1 0 1 1 0
    # bins of width 1/15: {.95} {.9 correct, .9 wrong} {.7} {.55} {.52}
    expected = (abs(1 - 0.95) + 2 * abs(0.5 - 0.9) + abs(0 - 0.7) + abs(1 - 0.55) + abs(1 - 0.52)) / 6
    assert M.ece(p) == pytest.approx(expected, abs=1e-12)
    bins = M.calibration_bins(p)
    assert bins.counts.tolist() == [0] * 7 + [1, 1, 0, 1, 0, 0, 2, 1]
    assert bins.accuracy[13] == 0.5 and bins.confidence[13] == pytest.approx(0.9)
    # bins are upper-inclusive: with 4 bins confidence 0.75 falls in (0.5, 0.75]
    assert M.calibration_bins([0.75, 0.25], n_bins=4).counts.tolist() == [0, 0, 2, 0]
    assert M.ece([0.75, 0.25], n_bins=4) == pytest.approx(0.25)  # accuracy 1/2, confidence 3/4


def test_ece_matches_loop_reference_and_is_small_when_calibrated():
    rng = np.random.default_rng(1)
    p = rng.uniform(0, 1, 997)
    conf, correct = np.maximum(p, 1 - p), p > 0.5
    ref = 0.0
    for m in range(15):  # bin m: m/15 < c <= (m+1)/15
        inside = (conf > m / 15) & (conf <= (m + 1) / 15)
        if inside.any():
            ref += inside.sum() / p.size * abs(correct[inside].mean() - conf[inside].mean())
    assert M.ece(p) == pytest.approx(ref, abs=1e-12)
    # perfectly calibrated predictions: the chosen side wins with probability sigmoid(f)
    f = rng.normal(0, 2, 200_000)
    chosen_first = rng.uniform(size=f.size) < 1 / (1 + np.exp(-f))
    margins = np.where(chosen_first, f, -f)
    assert M.ece(M.preference_probability(margins)) < 0.01
    assert M.ece(M.preference_probability(3 * margins)) > 0.1  # over-confident


def test_ece_uprlhf_rescales_largest_margin_to_099():
    f = [2.0, -1.0, 0.5, 1.0]
    s = math.log(0.99 / 0.01) / 2.0
    c = [sig(2 * s), 1 - sig(-1 * s), sig(0.5 * s), sig(1 * s)]  # confidences .99 .909 .759 .909
    expected = (abs(1 - c[0]) + 2 * abs(0.5 - c[1]) + abs(1 - c[2])) / 4
    assert M.ece_uprlhf(f) == pytest.approx(expected, abs=1e-12)
    assert M.ece_uprlhf(torch.tensor(f) * 37.0) == pytest.approx(expected, abs=1e-9)  # scale-free
    assert M.ece_uprlhf([0.0, 0.0]) == pytest.approx(0.5)  # no signal: p = 1/2, counted wrong


def brute_auroc(s: np.ndarray, y: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
    return wins / (len(pos) * len(neg))


def test_auroc_hand_and_brute_force_with_ties():
    assert M.auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert M.auroc([1, 1, 1], [0, 1, 1]) == pytest.approx(0.5)
    rng = np.random.default_rng(2)
    for _ in range(5):
        s = rng.integers(0, 6, 40).astype(float)  # many ties
        y = (rng.uniform(size=40) < 0.4).astype(int)
        y[:2] = [0, 1]
        assert M.auroc(torch.tensor(s), y) == pytest.approx(brute_auroc(s, y), abs=1e-12)
    with pytest.raises(ValueError, match="both labels"):
        M.auroc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="0 or 1"):
        M.auroc([0.1, 0.2], [0, 2])


def test_ranks_and_correlations():
    assert M.rankdata([10, 20, 10, 30]).tolist() == [1.5, 3.0, 1.5, 4.0]
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert M.pearson(x, 2 * x + 1) == pytest.approx(1.0)
    assert M.pearson(x, -x) == pytest.approx(-1.0)
    assert M.spearman(x, np.exp(x)) == pytest.approx(1.0) and M.pearson(x, np.exp(x)) < 0.95
    assert math.isnan(M.pearson(x, np.ones(5)))
    # hand: x = 1..4, y = 1 3 2 4 -> centred products (-1.5)(-1.5) + (-.5)(.5) + (.5)(-.5) + (1.5)(1.5) = 4; norms 5
    assert M.pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 5)
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=50), rng.normal(size=50)
    assert M.pearson(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-12)
    stats = pytest.importorskip("scipy.stats")
    ta, tb = rng.integers(0, 5, 50), rng.integers(0, 5, 50)
    assert M.spearman(ta, tb) == pytest.approx(stats.spearmanr(ta, tb).statistic, abs=1e-12)


def test_reliability_diagram_png(tmp_path):
    p = np.random.default_rng(4).uniform(0, 1, 300)
    out = reliability_diagram(p, tmp_path / "plots" / "rd.png", title="test")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
