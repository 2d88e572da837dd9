"""pair_margins / evaluate_preferences on fake scorers (ensemble, point, score_pairs) and a tiny RewardModel."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from bayesrm.data.schema import PreferencePair
from bayesrm.evaluation.evaluate import evaluate_preferences, pair_margins
from bayesrm.types import RewardPrediction

PAIRS = [
    PreferencePair("q1", "good", "bad", source="f:1"),
    PreferencePair("q2", "great", "awful", source="f:2"),
    PreferencePair("q3", "fine", "meh", source="f:3"),
]
# member rewards of each response, K = 3
TABLE = {
    "good": [2.0, 3.0, 4.0], "bad": [1.0, 2.0, 3.0],     # f_k = 1 1 1: members agree, var_f = 0
    "great": [1.0, 0.0, 2.0], "awful": [0.0, 1.0, -1.0],  # f_k = 1 -1 3
    "fine": [0.5, 0.5, 0.5], "meh": [1.0, 0.0, 2.0],      # f_k = -.5 .5 -1.5
}


class FakeEnsemble:
    def __init__(self) -> None:
        self.calls: list[int] = []

    def score(self, prompts, responses, batch_size=32, progress=False) -> RewardPrediction:
        assert len(prompts) == len(responses)
        self.calls.append(len(responses))
        return RewardPrediction.from_members(torch.tensor([TABLE[r] for r in responses]).T)  # [K, B]


class FakePoint:
    """Point rewards with a per-response variance (e.g. a gold judge with noise)."""

    REWARD = {"good": 1.0, "bad": -1.0, "great": 0.5, "awful": 1.5, "fine": 0.0, "meh": 0.0}
    VAR = {"good": 0.1, "bad": 0.2, "great": 0.0, "awful": 0.3, "fine": 1.0, "meh": 2.0}

    def score(self, prompts, responses, batch_size=32, progress=False) -> RewardPrediction:
        return RewardPrediction(mean=torch.tensor([self.REWARD[r] for r in responses]),
                                var=torch.tensor([self.VAR[r] for r in responses]))


class FakePairScorer(FakePoint):
    """Knows the covariance of r_w and r_l (as Laplace does) and says so through score_pairs."""

    def __init__(self) -> None:
        self.seen = None

    def score(self, *args, **kwargs):
        raise AssertionError("score_pairs must be preferred over score")

    def score_pairs(self, prompts, chosen, rejected, batch_size=32, progress=False) -> RewardPrediction:
        self.seen = (list(prompts), list(chosen), list(rejected), batch_size)
        return RewardPrediction(mean=torch.tensor([2.0, -1.0, 0.0]), var=torch.tensor([0.0, 8 / math.pi, 1.0]))


def test_ensemble_margins_are_member_differences():
    scorer = FakeEnsemble()
    m = pair_margins(scorer, PAIRS)
    assert scorer.calls == [6]  # chosen and rejected scored in one call
    f = np.array([[1, 1, -0.5], [1, -1, 0.5], [1, 3, -1.5]])  # [K, B] by hand from TABLE
    assert torch.allclose(m.members, torch.tensor(f, dtype=torch.float32))
    assert torch.allclose(m.mean, torch.tensor([1.0, 1.0, -0.5]))
    # population variance over members (ddof=0): (0, 8/3, 2/3); the independent rule var_w + var_l
    # would give 2/3 + 2/3 for pair 1, whose members agree exactly
    assert torch.allclose(m.var, torch.tensor([0.0, 8 / 3, 2 / 3]))


def test_point_margins_add_variances():
    m = pair_margins(FakePoint(), PAIRS)
    assert m.members is None
    assert torch.allclose(m.mean, torch.tensor([2.0, -1.0, 0.0]))
    assert torch.allclose(m.var, torch.tensor([0.3, 0.3, 3.0]))


def test_score_pairs_is_used_and_metrics_by_hand():
    scorer = FakePairScorer()
    res = evaluate_preferences(scorer, PAIRS, batch_size=7)
    assert scorer.seen == (["q1", "q2", "q3"], ["good", "great", "fine"], ["bad", "awful", "meh"], 7)
    # p = sigmoid(mu / sqrt(1 + pi var / 8)): var 8/pi halves the variance term -> mu / sqrt(2)
    p = [1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(1 / math.sqrt(2))), 0.5]
    assert np.allclose(res.probabilities, p, atol=1e-6)
    mt = res.metrics
    assert mt["n"] == 3
    assert mt["accuracy"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert mt["nll"] == pytest.approx(-np.mean(np.log(p)), rel=1e-6)
    assert mt["brier"] == pytest.approx(np.mean((1 - np.array(p)) ** 2), rel=1e-6)
    assert mt["mean_margin"] == pytest.approx(1 / 3)
    assert mt["mean_margin_std"] == pytest.approx((0 + math.sqrt(8 / math.pi) + 1) / 3, rel=1e-6)
    # ECE by hand: confidences .881 (correct), .670 (wrong), .5 (wrong) in three different bins
    assert mt["ece"] == pytest.approx((abs(1 - p[0]) + abs(0 - (1 - p[1])) + abs(0 - 0.5)) / 3, rel=1e-6)
    # UP-RLHF: margins 2, -1, 0 rescaled so that |2| -> 0.99; confidences .99, 1 - sigmoid(-s) = .909, .5
    s = math.log(99) / 2
    assert mt["ece_uprlhf"] == pytest.approx((0.01 + 1 / (1 + math.exp(-s)) + 0.5) / 3, rel=1e-6)
    loaded = json.loads(res.to_json(per_pair=True))
    assert loaded["metrics"] == pytest.approx(mt)
    assert [q["source"] for q in loaded["pairs"]] == ["f:1", "f:2", "f:3"]
    assert loaded["pairs"][1]["probability"] == pytest.approx(p[1], rel=1e-6)
    assert "pairs" not in json.loads(res.to_json())


def test_ensemble_evaluation_uses_member_variance():
    res = evaluate_preferences(FakeEnsemble(), PAIRS)
    mu, var = np.array([1.0, 1.0, -0.5]), np.array([0.0, 8 / 3, 2 / 3])
    p = 1 / (1 + np.exp(-mu / np.sqrt(1 + np.pi * var / 8)))
    assert np.allclose(res.probabilities, p, atol=1e-6)
    assert res.metrics["accuracy"] == pytest.approx(2 / 3)
    assert res.metrics["mean_margin_std"] == pytest.approx(np.mean(np.sqrt(var)), rel=1e-6)


def test_bad_scorer_output_and_empty_pairs():
    class Short:
        def score(self, prompts, responses, batch_size=32, progress=False):
            return RewardPrediction.point(torch.zeros(len(responses) - 1))

    with pytest.raises(ValueError, match="returned 5 predictions for 6 inputs"):
        pair_margins(Short(), PAIRS)
    with pytest.raises(ValueError, match="no pairs"):
        evaluate_preferences(FakePoint(), [])


def test_tiny_reward_model(tiny_bert_dir, toy_pairs):
    from bayesrm.models.reward_model import RewardModel, RewardModelConfig

    model = RewardModel.from_config(RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=32), seed=0)
    pairs = [PreferencePair(p, c, r) for p, c, r in toy_pairs[:10]]
    res = evaluate_preferences(model, pairs, batch_size=4)
    direct = model.score([p.prompt for p in pairs], [p.chosen for p in pairs]).mean \
        - model.score([p.prompt for p in pairs], [p.rejected for p in pairs]).mean
    assert torch.allclose(res.margins.mean, direct, atol=1e-5)
    assert res.metrics["mean_margin_std"] == 0.0
    assert all(math.isfinite(v) for v in res.metrics.values())
