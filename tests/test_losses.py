"""Bradley-Terry loss against hand-computed values."""

import math

import pytest
import torch

from bayesrm.training.losses import bradley_terry_loss


def nll(f: float) -> float:
    return -math.log(1 / (1 + math.exp(-f)))


def test_point_loss_margin_and_centering():
    rw, rl = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    loss, stats = bradley_terry_loss(rw, rl)
    assert loss.item() == pytest.approx((nll(1.0) + nll(-1.0)) / 2)
    assert stats["accuracy"] == 0.5 and stats["margin"] == pytest.approx(0.0)
    loss, _ = bradley_terry_loss(rw, rl, margin=torch.tensor([0.5, 0.0]), center_coef=0.1)
    centering = 0.1 * ((3.0**2) + (1.0**2)) / 2
    assert loss.item() == pytest.approx((nll(0.5) + nll(-1.0)) / 2 + centering)


def test_ensemble_targets_members_mean_and_weights():
    rw = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # [K=2, B=2]
    rl = torch.zeros(2, 2)
    members, stats = bradley_terry_loss(rw, rl, target="members")
    assert members.item() == pytest.approx((nll(2) + nll(0) + nll(0) + nll(3)) / 4)
    assert stats["acc_member_0"] == 0.5 and stats["acc_member_1"] == 0.5 and stats["accuracy"] == 1.0
    mean, _ = bradley_terry_loss(rw, rl, target="mean")
    assert mean.item() == pytest.approx((nll(1.0) + nll(1.5)) / 2)
    weights = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    weighted, _ = bradley_terry_loss(rw, rl, member_weights=weights)
    assert weighted.item() == pytest.approx((nll(2) + (nll(0) + nll(3)) / 2) / 2)


def test_mean_target_refuses_bootstrap_weights():
    """The ensemble-mean loss has no per-member term, so bootstrap weights would be silently dropped."""
    rw, rl = torch.tensor([[2.0, 0.0], [0.0, 3.0]]), torch.zeros(2, 2)
    with pytest.raises(ValueError, match="bootstrap"):
        bradley_terry_loss(rw, rl, target="mean", member_weights=torch.ones(2, 2))
    bradley_terry_loss(rw[0], rl[0], target="mean", member_weights=torch.ones(2, 2))  # a point model: no ensemble, no weights used


def test_bad_arguments():
    with pytest.raises(ValueError, match="target"):
        bradley_terry_loss(torch.zeros(2), torch.zeros(2), target="median")
    with pytest.raises(ValueError, match="differ"):
        bradley_terry_loss(torch.zeros(2), torch.zeros(3))
