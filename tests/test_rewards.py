"""Conservative rewards, transforms and the registry against hand-computed values."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from bayesrm.rewards import (
    LogSigmoid,
    Mean,
    MinMember,
    PromptReference,
    Standardized,
    Standardizer,
    StdPenalty,
    SumOf,
    UPPenalty,
    VarPenalty,
    make_reward,
    parse_reward,
)
from bayesrm.types import RewardPrediction

# Two members, three examples: mean [2, 2, 4], population std [1, 0, 2], var [1, 0, 4].
MEMBERS = torch.tensor([[1.0, 2.0, 2.0], [3.0, 2.0, 6.0]])


@pytest.fixture()
def pred() -> RewardPrediction:
    return RewardPrediction.from_members(MEMBERS)


def logsig(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_basic_formulas(pred):
    torch.testing.assert_close(Mean()(pred), torch.tensor([2.0, 2.0, 4.0]))
    torch.testing.assert_close(StdPenalty(k=2)(pred), torch.tensor([0.0, 2.0, 0.0]))
    torch.testing.assert_close(VarPenalty(k=0.5)(pred), torch.tensor([1.5, 2.0, 2.0]))
    torch.testing.assert_close(MinMember()(pred), torch.tensor([1.0, 2.0, 2.0]))


def test_min_without_members_is_a_clear_error():
    with pytest.raises(ValueError, match="members"):
        MinMember()(RewardPrediction.point(torch.tensor([1.0, 2.0])))


def test_negative_penalty_rejected():
    with pytest.raises(ValueError, match="k must be"):
        StdPenalty(k=-1)


def test_up_running_mean_over_batches():
    up = UPPenalty(beta2=0.5)
    b1 = RewardPrediction(mean=torch.tensor([1.0, 2.0]), var=torch.tensor([1.0, 9.0]))  # sigma 1, 3
    b2 = RewardPrediction(mean=torch.tensor([0.0, 0.0, 0.0]), var=torch.tensor([0.0, 4.0, 16.0]))  # sigma 0, 2, 4
    # batch 1: u_bar = (1 + 3) / 2 = 2 (current batch included before subtracting)
    torch.testing.assert_close(up(b1), torch.tensor([1.0 - 0.5 * (1 - 2), 2.0 - 0.5 * (3 - 2)]))
    # batch 2: u_bar = (1 + 3 + 0 + 2 + 4) / 5 = 2
    torch.testing.assert_close(up(b2), torch.tensor([1.0, 0.0, -1.0]))
    b3 = RewardPrediction(mean=torch.tensor([5.0]), var=torch.tensor([121.0]))  # sigma 11
    # batch 3: u_bar = (10 + 11) / 6 = 3.5
    torch.testing.assert_close(up(b3), torch.tensor([5.0 - 0.5 * (11 - 3.5)]))
    assert up.stats.count == 6 and up.u_bar == pytest.approx(3.5)


def test_up_state_dict_round_trip(tmp_path):
    up = UPPenalty(beta2=1.0)
    up(RewardPrediction(mean=torch.zeros(3), var=torch.tensor([1.0, 4.0, 9.0])))  # u_bar = 2
    path = tmp_path / "reward_state.safetensors"
    save_file(up.state_dict(), str(path))
    resumed = UPPenalty(beta2=1.0)
    resumed.load_state_dict(load_file(str(path)))
    assert resumed.stats.count == 3 and resumed.u_bar == pytest.approx(2.0)
    nxt = RewardPrediction(mean=torch.zeros(1), var=torch.tensor([25.0]))  # u_bar -> (6 + 5) / 4
    torch.testing.assert_close(resumed(nxt), up(nxt))
    torch.testing.assert_close(resumed(nxt), torch.tensor([-(5.0 - 16.0 / 5)]))


def test_up_frozen_needs_state():
    with pytest.raises(RuntimeError, match="running mean"):
        UPPenalty(update=False)(RewardPrediction.point(torch.zeros(2)))


def test_prompt_reference_quantile_matches_numpy():
    gen = np.random.default_rng(0)
    ids = [f"p{i % 3}" for i in range(30)] + ["solo"]
    rewards = gen.normal(size=31)
    ref = PromptReference(ids, torch.tensor(rewards))
    for q in (0.0, 0.5, 0.85, 1.0):
        levels = ref.quantile(q)
        for pid in set(ids):
            expected = np.quantile(rewards[[i for i, x in enumerate(ids) if x == pid]], q)
            assert levels[pid] == pytest.approx(expected, abs=1e-12)


def test_log_sigmoid_with_fitted_quantile(pred):
    ref_ids = ["a", "a", "a", "a", "b", "b"]
    ref_rewards = torch.tensor([0.0, 1.0, 2.0, 3.0, 10.0, 20.0])
    reward = LogSigmoid(reference=PromptReference(ref_ids, ref_rewards), q=0.5)
    # medians: a -> 1.5, b -> 15
    out = reward(pred, ["a", "b", "a"])
    torch.testing.assert_close(out, torch.tensor([logsig(2 - 1.5), logsig(2 - 15), logsig(4 - 1.5)]))
    with pytest.raises(KeyError, match="zzz"):
        reward(pred, ["a", "b", "zzz"])
    with pytest.raises(ValueError, match="prompt_ids"):
        reward(pred)


def test_log_sigmoid_against_reference_response(pred):
    reference_response_reward = {"x": 3.0, "y": -1.0}
    out = LogSigmoid(base=StdPenalty(k=1), reference=reference_response_reward)(pred, ["x", "y", "y"])
    # base = mu - sigma = [1, 2, 2]
    torch.testing.assert_close(out, torch.tensor([logsig(1 - 3), logsig(2 + 1), logsig(2 + 1)]))


def test_log_sigmoid_fit_uses_base_reward(pred):
    reward = parse_reward("std:k=1|log_sigmoid:q=1.0")
    with pytest.raises(RuntimeError, match="no reference"):
        reward(pred, ["a", "a", "b"])
    reward.fit(pred, ["a", "a", "b"])  # base = [1, 2, 2]: max over a = 2, over b = 2
    torch.testing.assert_close(reward(pred, ["a", "a", "b"]), torch.tensor([logsig(-1), logsig(0), logsig(0)]))


def test_sum_of_log_sigmoids_is_and(pred):
    helpful = LogSigmoid(reference=0.0)
    harmless = LogSigmoid(base=MinMember(), reference={"a": 1.0})
    other = RewardPrediction.from_members(torch.tensor([[0.0, -1.0, 1.0], [2.0, 1.0, 1.0]]))  # min [0, -1, 1]
    total = SumOf([helpful, harmless])([pred, other], ["a", "a", "a"])
    expected = [logsig(m) + logsig(r - 1.0) for m, r in zip([2, 2, 4], [0, -1, 1])]
    torch.testing.assert_close(total, torch.tensor(expected))
    # log of the product of the two independent probabilities
    torch.testing.assert_close(total.exp(), torch.sigmoid(pred.mean) * torch.sigmoid(other.members.amin(0) - 1))
    with pytest.raises(ValueError, match="2 predictions"):
        SumOf([helpful, harmless])([pred], ["a"] * 3)


def test_standardized_reward(pred):
    reference = RewardPrediction.point(torch.tensor([0.0, 2.0, 4.0]))  # loc 2, population std sqrt(8/3)
    s = math.sqrt(8 / 3)
    reward = Standardized(StdPenalty(k=1)).fit(reference)
    expected = (pred.mean - 2) / s - pred.std / s
    torch.testing.assert_close(reward(pred), expected)
    z = Standardizer(loc=2.0, scale=s)(pred)
    torch.testing.assert_close(z.members, (MEMBERS - 2) / s)
    state = reward.state_dict()
    fresh = parse_reward("zscore|std:k=1")
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(pred), expected)
    with pytest.raises(ValueError, match="vary"):
        Standardizer.fit(torch.ones(4))


def test_is_fitted_follows_every_stage_that_needs_a_reference(pred):
    assert parse_reward("std:k=1").is_fitted() and parse_reward("up").is_fitted()
    for spec in ("zscore|std:k=1", "log_sigmoid", "zscore|std:k=2|log_sigmoid"):
        reward = parse_reward(spec)
        assert not reward.is_fitted(), spec
        assert reward.fit(pred, ["a", "b", "c"]).is_fitted(), spec
    assert LogSigmoid(reference=0.0).is_fitted()


def test_rl_scoring_fits_an_unfitted_reward_on_the_first_batch_only(pred):
    from bayesrm.alignment.rl.reward_fn import apply_reward

    reward = parse_reward("zscore|var:k=1")
    first = apply_reward(reward, pred, ["a", "b", "c"])  # fitted here: loc 8/3, scale std([2, 2, 4])
    s = float(torch.tensor([2.0, 2.0, 4.0]).std(unbiased=False))
    torch.testing.assert_close(first, ((pred.mean - 8 / 3) / s - pred.var / s**2).float())
    shifted = RewardPrediction.from_members(MEMBERS + 10.0)
    second = apply_reward(reward, shifted, ["a", "b", "c"])  # same standardiser, not refitted
    torch.testing.assert_close(second, first + 10.0 / s)


@pytest.mark.parametrize(
    ("spec", "cls", "attrs"),
    [
        ("mean", Mean, {}),
        ("std:k=2", StdPenalty, {"k": 2.0}),
        ("lcb", StdPenalty, {"k": 1.0}),
        ("var:k=0.5", VarPenalty, {"k": 0.5}),
        ("uwo:k=3", VarPenalty, {"k": 3.0}),
        ("min", MinMember, {}),
        ("up:beta2=0.25", UPPenalty, {"beta2": 0.25}),
    ],
)
def test_parse_reward(spec, cls, attrs):
    reward = parse_reward(spec)
    assert type(reward) is cls
    for key, value in attrs.items():
        assert getattr(reward, key) == value
    assert type(parse_reward(reward.spec())) is cls


def test_parse_composition_and_spec_round_trip(pred):
    reward = parse_reward("zscore | std:k=2 | log_sigmoid:q=0.9")
    assert isinstance(reward, LogSigmoid) and reward.q == 0.9
    assert isinstance(reward.base, Standardized) and reward.base.base.k == 2.0
    assert reward.spec() == "zscore|std:k=2|log_sigmoid:q=0.9"
    ids = ["a", "a", "b"]
    reward.fit(pred, ids)
    again = parse_reward(reward.spec()).fit(pred, ids)
    torch.testing.assert_close(reward(pred, ids), again(pred, ids))
    assert parse_reward("std:k=2|log_sigmoid", reference=0.0).base.k == 2.0
    alone = parse_reward("log_sigmoid:q=0.5", reference=1.0)
    assert isinstance(alone.base, Mean) and alone.reference == 1.0
    torch.testing.assert_close(alone(pred), torch.nn.functional.logsigmoid(pred.mean - 1.0))


@pytest.mark.parametrize(
    ("spec", "match"),
    [("nope", "unknown reward"), ("std:z=1", "no parameter 'z'"), ("std:k", "key=value"),
     ("std:k=abc", "k: expected float, got str"), ("std|min", "not a transform"), ("zscore:k=1", "no parameters"),
     ("min|", "empty stage")],
)
def test_parse_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_reward(spec)


def test_prompt_reference_extends_once_per_prompt_and_round_trips_its_state():
    from bayesrm.rewards import PromptReference

    ref = PromptReference(["a", "a", "b"], torch.tensor([1.0, 3.0, 2.0]))
    ref.extend(["c", "c"], torch.tensor([0.0, 4.0]))
    assert ref.quantile(0.5) == {"a": 2.0, "b": 2.0, "c": 2.0}
    with pytest.raises(ValueError, match="already"):
        ref.extend(["a"], torch.tensor([9.0]))
    back = PromptReference.from_state(json.loads(json.dumps(ref.to_state())))
    assert back.quantile(0.25) == ref.quantile(0.25)
    reward = parse_reward("log_sigmoid:q=0.5", reference=ref)
    fresh = parse_reward("log_sigmoid:q=0.5")
    fresh.load_state_dict(json.loads(json.dumps(reward.state_dict())))
    assert fresh.reference.quantile(0.5) == ref.quantile(0.5)


def test_sum_spec_parses_terms_and_round_trips():
    reward = parse_reward("log_sigmoid + (zscore|std:k=1e+3|log_sigmoid:q=0.5)")
    assert isinstance(reward, SumOf) and len(reward.rewards) == 2
    assert reward.rewards[1].base.base.k == 1000.0
    assert parse_reward(reward.spec()).spec() == reward.spec()
    with pytest.raises(ValueError, match="empty term"):
        parse_reward("mean + ")


def test_fitting_a_standardised_log_sigmoid_keeps_given_reference_levels():
    """zscore|log_sigmoid with given levels: fit() standardises but must not replace the levels with batch quantiles."""
    reward = parse_reward("zscore|log_sigmoid", reference={"a": 0.5, "b": -0.5})
    pred = RewardPrediction(mean=torch.tensor([1.0, 2.0, 3.0, 4.0]), var=torch.zeros(4))
    reward.fit(pred, ["a", "a", "b", "b"])
    assert reward.reference == {"a": 0.5, "b": -0.5} and reward.base.standardizer is not None
    z = (pred.mean - 2.5) / pred.mean.std(unbiased=False)
    torch.testing.assert_close(reward(pred, ["a", "a", "b", "b"]), torch.nn.functional.logsigmoid(z - torch.tensor([0.5, 0.5, -0.5, -0.5])))


def test_make_reward_is_a_deprecated_alias_of_parse_reward():
    """One public name per concept: rewards.make_reward still builds what it did, with a DeprecationWarning."""
    with pytest.warns(DeprecationWarning, match=r"bayesrm.rewards.make_reward is deprecated: use bayesrm.rewards.parse_reward"):
        old = make_reward("log_sigmoid", base="std:k=2", reference=0.0, q=0.5)
    new = parse_reward("std:k=2|log_sigmoid:q=0.5", reference=0.0)
    assert type(old) is type(new) is LogSigmoid and old.spec() == new.spec() == "std:k=2|log_sigmoid:q=0.5"
    assert old.reference == new.reference == 0.0
    with pytest.warns(DeprecationWarning):
        assert make_reward("std", k=3).spec() == parse_reward("std", k=3).spec() == "std:k=3"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # parse_reward itself warns about nothing
        parse_reward("zscore|up:beta2=0.5|log_sigmoid")


def test_reward_parameters_go_through_the_typed_converter():
    """Spec text and keyword values are checked like config fields (bayesrm.config.convert): numbers become floats,
    text that is no number, booleans and non-finite weights are refused naming the reward and parameter."""
    assert type(parse_reward("std:k=2").k) is float and parse_reward("up", beta2=1).beta2 == 1.0
    assert parse_reward("var:k=1e-3").k == 1e-3 and parse_reward("log_sigmoid:q=.5").q == 0.5
    cases = {
        ("std:k=x", ()): "reward 'std': k: expected float, got str ('x')",
        ("std:k=inf", ()): "reward 'std': k: expected float, got str ('inf')",
        ("std", (("k", True),)): "reward 'std': k: expected float, got bool",
        ("up", (("beta2", None),)): "reward 'up': beta2: expected float, got NoneType",
        ("std", (("k", float("inf")),)): "StdPenalty.k must be a finite number >= 0",
        ("std:k=-1", ()): "StdPenalty.k must be a finite number >= 0",
        ("log_sigmoid:q=2", ()): "LogSigmoid.q must be in [0, 1]",
        ("std:c=1", ()): "reward 'std' has no parameter 'c'; parameters: ['k']",
    }
    for (spec, kwargs), message in cases.items():
        with pytest.raises(ValueError) as info:
            parse_reward(spec, **dict(kwargs))
        assert message in str(info.value), (spec, kwargs, str(info.value))
