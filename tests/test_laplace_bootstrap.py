"""Laplace per ensemble member on its own bootstrap replicate (issue 14 item 5)."""

from __future__ import annotations

import math

import pytest
import torch

from bayesrm.data.schema import PreferencePair
from bayesrm.models.reward_model import RewardModelConfig
from bayesrm.registry import load_scorer
from bayesrm.training.losses import bradley_terry_loss
from bayesrm.uncertainty.base import EnsembleConfig
from bayesrm.uncertainty.laplace import LaplaceEnsemble, LaplaceLoRA
from bayesrm.uncertainty.lora_ensemble import LoRAEnsemble

TEXTS = ["it is good", "bad", "the cat is nice and kind thanks", "i hate it", "hello world w3 w4"]


@pytest.fixture
def ensemble(tiny_bert_dir) -> LoRAEnsemble:
    config = RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=24, target_modules=["query", "value"])
    ens = LoRAEnsemble.from_config(config, EnsembleConfig(members=2, bootstrap=True, seed=4))
    with torch.no_grad():  # B = 0 at init: give the members distinct nonzero LoRA updates
        for a in ens.adapters().values():
            a.lora_B.normal_(0, 0.3, generator=torch.Generator().manual_seed(1))
    return ens.eval()


@pytest.fixture
def pairs(toy_pairs) -> list[PreferencePair]:
    return [PreferencePair(p, c, r) for p, c, r in toy_pairs[:20]]


def test_replicates_are_the_pairs_training_weighs_with_their_counts(ensemble, pairs):
    replicates = ensemble.bootstrap_replicates(pairs)
    # counts asked for one pair at a time (as shuffled trainer batches do) give the same multiset
    for k, rep in enumerate(replicates):
        by_hand = [p for i, p in enumerate(pairs) for _ in range(int(ensemble.member_weights(torch.tensor([i]))[k, 0]))]
        assert rep == by_hand
    assert any(rep.count(p) > 1 for rep in replicates for p in pairs)  # Poisson(1): some pairs repeat
    assert replicates[0] != replicates[1]
    # the trainer's weighted BT loss of member k over all pairs = member k's mean loss on its replicate
    order = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(0))
    shuffled = [pairs[i] for i in order]
    prompts = [p.prompt for p in shuffled]
    chosen = ensemble.score(prompts, [p.chosen for p in shuffled]).members  # [K, N]
    rejected = ensemble.score(prompts, [p.rejected for p in shuffled]).members
    weighted, _ = bradley_terry_loss(chosen, rejected, member_weights=ensemble.member_weights(order))
    per_member = []
    for k, member in enumerate(ensemble.members_as_reward_models()):
        rep = replicates[k]
        f = member.score([p.prompt for p in rep], [p.chosen for p in rep]).mean - member.score(
            [p.prompt for p in rep], [p.rejected for p in rep]).mean
        per_member.append(float(-torch.nn.functional.logsigmoid(f).mean()))
    assert math.isclose(float(weighted), sum(per_member) / 2, rel_tol=1e-4)


def test_member_k_curvature_uses_exactly_its_replicate(ensemble, pairs, tmp_path):
    replicates = ensemble.bootstrap_replicates(pairs)
    la = LaplaceEnsemble.from_ensemble(ensemble, low_rank=None, prior_precision=2.0)
    la.fit(pairs, batch_size=7, replicates=replicates)
    assert la.bootstrap
    shared = LaplaceEnsemble.from_ensemble(ensemble, low_rank=None, prior_precision=2.0).fit(pairs, batch_size=7)
    members = ensemble.members_as_reward_models()
    prompts = ["what do you think"] * len(TEXTS)
    for k, post in enumerate(la.posteriors):
        rep = replicates[k]
        assert post.n_data == len(rep) == int(ensemble.member_weights(torch.arange(len(pairs)))[k].sum())
        reference = LaplaceLoRA(members[k], low_rank=None, prior_precision=2.0).fit(list(rep), batch_size=5)
        assert math.isclose(post.log_marginal_likelihood(), reference.log_marginal_likelihood(), rel_tol=1e-6)
        torch.testing.assert_close(post.score(prompts, TEXTS).var, reference.score(prompts, TEXTS).var, rtol=1e-4, atol=1e-7)
        # not the same as every member on all pairs, nor as the replicate without its repeats
        other = shared.posteriors[k]
        assert not math.isclose(post.log_marginal_likelihood(), other.log_marginal_likelihood(), rel_tol=1e-3)
        once = LaplaceLoRA(members[k], low_rank=None, prior_precision=2.0).fit(list(dict.fromkeys(rep)), batch_size=5)
        assert not math.isclose(post.log_marginal_likelihood(), once.log_marginal_likelihood(), rel_tol=1e-3)
    la.save_pretrained(tmp_path / "la")
    loaded = load_scorer(tmp_path / "la")
    assert loaded.bootstrap and [p.n_data for p in loaded.posteriors] == [len(r) for r in replicates]
    with pytest.raises(ValueError, match="3 bootstrap replicates for 2 members"):
        la.fit(pairs, replicates=replicates + [pairs])
