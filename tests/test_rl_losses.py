"""PPO / RLOO maths against hand-computed values and independent references."""

from __future__ import annotations

import math

import pytest
import torch

from bayesrm.alignment.rl import losses as L
from bayesrm.alignment.rl.config import RLConfig
from bayesrm.alignment.rl.rloo import rloo_advantages_for
from bayesrm.alignment.rl.rollout import Rollout, response_mask_from_tokens


def test_gae_hand_computed():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 2.0, 0.0]])
    values = torch.tensor([[0.5, 0.2, 0.4], [0.1, 0.3, 9.0]])  # 9.0 sits on a masked position
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = L.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 0: delta = (0.6, 0.16, -0.32); A2 = 0.6, A1 = 0.16 + 0.72 * 0.6, A0 = -0.32 + 0.72 * A1
    a1 = 0.16 + 0.72 * 0.6
    a0 = -0.32 + 0.72 * a1
    # row 1 ends at t = 1: A1 = 2 - 0.3, A0 = (0.9 * 0.3 - 0.1) + 0.72 * A1
    b1 = 1.7
    b0 = 0.17 + 0.72 * b1
    expected_adv = torch.tensor([[a0, a1, 0.6], [b0, b1, 0.0]])
    torch.testing.assert_close(adv, expected_adv)
    torch.testing.assert_close(ret, (expected_adv + values) * mask)


def test_gae_with_unit_gamma_lambda_is_monte_carlo_return_minus_value():
    g = torch.Generator().manual_seed(0)
    rewards, values = torch.randn(4, 6, generator=g), torch.randn(4, 6, generator=g)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2, [1] * 1 + [0] * 5, [1] * 5 + [0]])
    adv, ret = L.gae(rewards * mask, values, mask, gamma=1.0, lam=1.0)
    for b in range(4):
        n = int(mask[b].sum())
        for t in range(n):
            assert adv[b, t].item() == pytest.approx(rewards[b, t:n].sum().item() - values[b, t].item(), abs=1e-5)
            assert ret[b, t].item() == pytest.approx(rewards[b, t:n].sum().item(), abs=1e-5)
        assert torch.all(adv[b, n:] == 0)


def test_token_rewards_penalty_and_score_on_last_token():
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-1.0, -1.0, -7.0]])
    ref = torch.tensor([[-1.5, -1.0, -0.5], [-2.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    r = L.token_rewards(torch.tensor([1.0, 2.0]), logp, ref, mask, kl_coef=0.1)
    expected = torch.tensor([[-0.05, 0.1, 0.0 + 1.0], [-0.1, 0.0 + 2.0, 0.0]])
    torch.testing.assert_close(r, expected)


def test_clipped_policy_loss_values_and_gradient():
    old = torch.zeros(1, 4)
    logp = torch.tensor([[math.log(1.5), math.log(0.5), math.log(1.1), 3.0]], requires_grad=True)
    adv = torch.tensor([[1.0, -1.0, 2.0, 5.0]])
    mask = torch.tensor([[1, 1, 1, 0]])
    loss, clipfrac = L.clipped_policy_loss(logp, old, adv, mask, clip_range=0.2)
    # token 0: max(-1.5, -1.2) = -1.2 (clipped); token 1: max(0.5, 0.8) = 0.8 (clipped); token 2: -2.2
    assert loss.item() == pytest.approx((-1.2 + 0.8 - 2.2) / 3, abs=1e-6)
    assert clipfrac.item() == pytest.approx(2 / 3)
    loss.backward()
    # clipped tokens and the masked one get no gradient; d(-A ratio)/dlogp = -A ratio
    torch.testing.assert_close(logp.grad, torch.tensor([[0.0, 0.0, -2.2 / 3, 0.0]]))


def test_clipped_value_loss_hand_computed():
    values = torch.tensor([[1.0, 0.0, 0.6]])
    old = torch.tensor([[0.5, 0.5, 0.5]])
    returns = torch.tensor([[2.0, -1.0, 2.0]])
    loss, clipfrac = L.clipped_value_loss(values, old, returns, torch.ones(1, 3), clip_range=0.2)
    # clipped values 0.7, 0.3, 0.6 -> squared errors max(1, 1.69), max(1, 1.69), max(1.96, 1.96)
    assert loss.item() == pytest.approx(0.5 * (1.69 + 1.69 + 1.96) / 3, abs=1e-6)
    assert clipfrac.item() == pytest.approx(2 / 3)


def test_kl_estimators_hand_computed():
    logp = torch.tensor([[-1.0, -2.0, -4.0]])
    ref = torch.tensor([[-1.5, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    assert L.kl_k1(logp, ref, mask).item() == pytest.approx(0.5 - 1.0)
    k3 = (math.exp(-0.5) - 1 + 0.5) + (math.exp(1.0) - 1 - 1.0)
    assert L.kl_k3(logp, ref, mask).item() == pytest.approx(k3, rel=1e-6)
    assert L.kl_squared_loss(logp, ref, mask).item() == pytest.approx((0.25 + 1.0) / 2)


def test_eq15_sequence_loss_squares_the_sequence_log_ratio_by_hand():
    """UP-RLHF eq. 15 as written, beta1 E_y[(sum_t log pi - log pi_ref)^2], against the per-token variant."""
    logp = torch.tensor([[-1.0, -2.0, -4.0], [-0.5, -0.5, -3.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -1.0, 0.0], [-1.0, -1.0, -1.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    # log-ratios: row 0: 0.5, -1.0, (masked); row 1: 0.5, 0.5, -2.0 -> sums -0.5 and -1.0
    seq = L.kl_squared_sequence_loss(logp, ref, mask)
    assert seq.item() == pytest.approx(((-0.5) ** 2 + (-1.0) ** 2) / 2)
    assert L.kl_squared_loss(logp, ref, mask).item() == pytest.approx((0.25 + 1.0 + 0.25 + 0.25 + 4.0) / 5)
    seq.backward()  # d/d logp_bt = 2 s_b / B on real tokens, 0 on padding
    expected = torch.tensor([[-0.5, -0.5, 0.0], [-1.0, -1.0, -1.0]])
    torch.testing.assert_close(logp.grad, expected)


def test_rl_config_names_the_kl_forms_and_presets():
    with pytest.raises(ValueError, match="seq_loss.*token_loss"):
        RLConfig(kl_mode="loss")
    assert RLConfig().reward == "mean" and RLConfig().kl_mode == "penalty"  # no penalty hidden in the defaults
    up = RLConfig.preset("up-rlhf", kl_coef=0.1)
    assert (up.reward, up.kl_mode, up.kl_coef) == ("up:beta2=1.0", "seq_loss", 0.1)
    assert RLConfig.preset("rlhf").kl_mode == "penalty"
    with pytest.raises(ValueError, match="presets"):
        RLConfig.preset("ppo-max")


def test_kl_estimators_are_unbiased_for_the_closed_form():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(6, generator=g), 0)
    q = torch.softmax(torch.randn(6, generator=g), 0)
    exact = (p * (p / q).log()).sum().item()
    x = torch.multinomial(p, 200_000, replacement=True, generator=g)
    logp, logq = p.log()[x][None], q.log()[x][None]  # one "sequence" per sample: [N, 1]
    mask = torch.ones_like(logp)
    k1 = L.kl_k1(logp.T, logq.T, mask.T).mean().item()
    k3 = L.kl_k3(logp.T, logq.T, mask.T)
    assert k1 == pytest.approx(exact, abs=0.01)
    assert k3.mean().item() == pytest.approx(exact, abs=0.01)
    assert torch.all(k3 >= 0)


def test_rloo_baseline_hand_computed():
    scores = torch.tensor([[1.0, 2.0, 3.0, 6.0], [0.0, 0.0, 0.0, 4.0]])
    expected = torch.tensor([[1 - 11 / 3, 2 - 10 / 3, 3 - 3.0, 6 - 2.0], [-4 / 3, -4 / 3, -4 / 3, 4.0]])
    torch.testing.assert_close(L.rloo_advantages(scores), expected)
    torch.testing.assert_close(L.rloo_advantages(torch.tensor([[1.0, 3.0]])), torch.tensor([[-2.0, 2.0]]))
    with pytest.raises(ValueError, match="at least 2"):
        L.rloo_advantages(torch.ones(3, 1))


def test_rloo_token_advantages_include_the_kl_penalty():
    mask = torch.tensor([[1, 1], [1, 0]])
    logp = torch.tensor([[-1.0, -1.0], [-1.0, -5.0]])
    ref = torch.tensor([[-2.0, -2.0], [-1.0, 0.0]])  # per-sequence k1: 2.0 and 0.0
    rollout = Rollout([], [], torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3), mask, logp, ref, torch.zeros(2, 2), None)
    cfg = RLConfig(algo="rloo", samples_per_prompt=2, kl_mode="penalty", kl_coef=0.5, whiten_advantages=False)
    adv = rloo_advantages_for(rollout, torch.tensor([3.0, 1.0]), cfg)
    # penalised scores 3 - 1 = 2 and 1 - 0 = 1 -> leave-one-out advantages +1, -1 on every real token
    torch.testing.assert_close(adv, torch.tensor([[1.0, 1.0], [-1.0, 0.0]]))


def test_entropy_and_whitening_against_references():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 5, 7, generator=g) * 3
    torch.testing.assert_close(L.entropy_from_logits(logits), torch.distributions.Categorical(logits=logits).entropy())
    x = torch.randn(4, 5, generator=g)
    mask = (torch.rand(4, 5, generator=g) > 0.3).long()
    sel = x[mask.bool()]
    expected = (sel - sel.mean()) / sel.std(unbiased=False)
    torch.testing.assert_close(L.masked_whiten(x, mask)[mask.bool()], expected, rtol=1e-4, atol=1e-5)
    assert torch.all(L.masked_whiten(x, mask)[~mask.bool()] == 0)


def test_response_mask_stops_after_first_eos():
    tokens = torch.tensor([[5, 6, 0, 6], [5, 5, 5, 5], [6, 5, 5, 5]])
    torch.testing.assert_close(
        response_mask_from_tokens(tokens, [6, 9]), torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    )
