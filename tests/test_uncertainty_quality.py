"""Uncertainty-quality metrics against brute-force references: coverage curves (every tie order),
error AUROC (all positive / negative pairs), ECE / MCE in both conventions, member-averaged p."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from bayesrm.evaluation import metrics as M
from bayesrm.evaluation import uncertainty as U
from bayesrm.evaluation.evaluate import evaluate_preferences
from bayesrm.data.schema import PreferencePair
from bayesrm.types import RewardPrediction


def brute_coverage(correct, confidence):
    """Mean over every order that sorts confidence descending (ties in any order) of top-k accuracy."""
    n = len(correct)
    orders = [p for p in itertools.permutations(range(n))
              if all(confidence[p[i]] >= confidence[p[i + 1]] for i in range(n - 1))]
    acc = np.zeros(n)
    for p in orders:
        acc += np.cumsum([correct[i] for i in p]) / np.arange(1, n + 1)
    return acc / len(orders)


@pytest.mark.parametrize("seed", range(4))
def test_accuracy_coverage_matches_every_tie_order(seed):
    rng = np.random.default_rng(seed)
    n = 7
    correct = rng.choice([0.0, 0.5, 1.0], size=n)
    confidence = rng.choice([0.1, 0.2, 0.3], size=n)  # many ties
    curve = U.accuracy_coverage(correct, confidence)
    np.testing.assert_allclose(curve.accuracy, brute_coverage(correct, confidence), rtol=1e-12)
    np.testing.assert_allclose(curve.coverage, np.arange(1, n + 1) / n)
    assert curve.accuracy[-1] == pytest.approx(correct.mean())
    assert curve.area() == pytest.approx(curve.accuracy.mean())
    assert curve.at(0.5) == curve.accuracy[3]  # smallest k with k / 7 >= 0.5 is 4


def test_abstaining_rules():
    mu = np.array([2.0, -0.1, 0.5, -3.0])
    var = np.array([0.0, 4.0, 1.0, 9.0])
    curves = U.coverage_curves(mu, var)
    # by std: keep var 0, 1, 4, 9 in that order -> right, right, wrong, wrong
    np.testing.assert_allclose(curves["std"].accuracy, [1, 1, 2 / 3, 0.5])
    # by |margin|: 3.0 (wrong), 2.0, 0.5, 0.1
    np.testing.assert_allclose(curves["margin"].accuracy, [0, 0.5, 2 / 3, 0.5])
    # by both: |mu| / sqrt(1 + pi var / 8): 2.0, 0.1/1.35, 0.5/1.18, 3/2.13 -> 2.0, 1.41 (wrong), 0.42, 0.07
    both = np.abs(mu) / np.sqrt(1 + math.pi * var / 8)
    assert list(np.argsort(-both)) == [0, 3, 2, 1]
    np.testing.assert_allclose(curves["both"].accuracy, [1, 0.5, 2 / 3, 0.5])


def test_error_auroc_counts_every_error_correct_pair():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=40)
    std = np.round(np.abs(rng.normal(size=40)), 1)  # ties
    wrong, right = std[mu <= 0], std[mu > 0]
    brute = np.mean([(w > r) + 0.5 * (w == r) for w in wrong for r in right])
    assert U.error_auroc(std, mu) == pytest.approx(brute)
    assert U.error_auroc(np.zeros(40), mu) == 0.5  # a point model is at chance
    assert math.isnan(U.error_auroc(std, np.abs(mu) + 1))  # no errors: undefined


def test_shift_auroc_and_sigma_gold_correlation():
    assert U.shift_auroc([0.1, 0.2], [0.3, 0.15]) == pytest.approx(0.75)
    sigma = np.array([0.1, 0.2, 0.3, 0.4])
    gold = np.array([0.0, 1.0, 2.0, 3.0])
    proxy = gold + np.array([0.0, 0.1, -0.5, 1.0])  # error grows with sigma after z-scoring
    z = lambda x: (x - x.mean()) / x.std()  # noqa: E731
    err = np.abs(z(proxy) - z(gold))
    out = U.sigma_gold_correlation(sigma, proxy, gold)
    assert out["pearson"] == pytest.approx(np.corrcoef(sigma, err)[0, 1])
    assert math.isnan(U.sigma_gold_correlation(np.zeros(4), proxy, gold)["pearson"])


def brute_ece(points, n_bins):
    """ECE / MCE from (q, y) points by explicit loops over bins m/M < q <= (m+1)/M."""
    total, ece, mce = len(points), 0.0, 0.0
    for m in range(n_bins):
        lo, hi = m / n_bins, (m + 1) / n_bins
        inside = [(q, y) for q, y in points if (lo < q <= hi) or (m == 0 and q == 0)]
        if inside:
            gap = abs(np.mean([y for _, y in inside]) - np.mean([q for q, _ in inside]))
            ece += len(inside) / total * gap
            mce = max(mce, gap)
    return ece, mce


@pytest.mark.parametrize("n_bins", [10, 15])
def test_ece_mce_in_both_conventions(n_bins):
    rng = np.random.default_rng(n_bins)
    p = rng.uniform(0.02, 0.98, size=60)
    top = brute_ece([(max(x, 1 - x), float(x > 0.5)) for x in p], n_bins)
    chosen = brute_ece([(x, 1.0) for x in p] + [(1 - x, 0.0) for x in p], n_bins)
    tb, cb = M.calibration_bins(p, n_bins), M.calibration_bins_p_chosen(p, n_bins)
    assert (tb.ece(), tb.mce()) == pytest.approx(top)
    assert (cb.ece(), cb.mce()) == pytest.approx(chosen)
    # top-label fills only the upper half of the bins; P(chosen) fills both halves, mirrored
    assert np.all(tb.counts[: (n_bins - 1) // 2] == 0)
    np.testing.assert_array_equal(cb.counts, cb.counts[::-1])
    if n_bins % 2 == 0:
        assert cb.ece() == pytest.approx(tb.ece())


def test_member_probability_beside_probit():
    f = torch.tensor([[2.0, -1.0, 0.0], [0.0, -3.0, 4.0]])  # [K=2, N=3] member margins
    np.testing.assert_allclose(U.member_probability(f), (M.sigmoid(f[0]) + M.sigmoid(f[1])) / 2)

    class Ensemble:  # chosen rewards = f, rejected = 0, per member
        def score(self, prompts, responses, batch_size=32, progress=False):
            members = torch.cat([f, torch.zeros_like(f)], dim=1)
            return RewardPrediction.from_members(members)

    pairs = [PreferencePair("q", f"c{i}", f"r{i}") for i in range(3)]
    res = evaluate_preferences(Ensemble(), pairs)
    np.testing.assert_allclose(res.member_probabilities, U.member_probability(f))
    probit = M.preference_probability(f.mean(0), f.var(0, unbiased=False))
    np.testing.assert_allclose(res.probabilities, probit)
    assert res.metrics["nll_members"] == pytest.approx(M.bt_nll(U.member_probability(f)))
    assert res.metrics["nll"] == pytest.approx(M.bt_nll(probit))
    assert res.metrics["error_auroc"] == pytest.approx(U.error_auroc(res.margins.std, res.margins.mean))
