"""LaplaceLoRA / LaplaceEnsemble API: data inputs, save / load, mixture, CLI, behaviour off the data."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from torch.utils.data import DataLoader

from bayesrm.data.collator import PreferenceCollator, PreferenceDataset
from bayesrm.data.schema import PreferencePair
from bayesrm.models.checkpoint import CheckpointError
from bayesrm.models.reward_model import RewardModel, RewardModelConfig
from bayesrm.training.losses import bradley_terry_loss
from bayesrm.uncertainty.laplace import LaplaceEnsemble, LaplaceLoRA


def tiny_model(tiny_bert_dir, seed: int = 0) -> RewardModel:
    cfg = RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=16, target_modules=["query", "value"], lora_layers=[1])
    return RewardModel.from_config(cfg, seed=seed).double()


def train_map(model: RewardModel, pairs: list[PreferencePair], steps: int = 12) -> RewardModel:
    """A few BT steps so the posterior sits at a (rough) MAP."""
    loader = DataLoader(PreferenceDataset(pairs, model.encoder), batch_size=16, shuffle=True, collate_fn=PreferenceCollator(model.encoder),
                        generator=torch.Generator().manual_seed(0))
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=3e-2)
    model.train()
    step = 0
    while step < steps:
        for batch in loader:
            r = model(batch["input_ids"], batch["attention_mask"])
            n = r.shape[0] // 2
            loss, _ = bradley_terry_loss(r[:n], r[n:])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
    return model.eval()


@pytest.fixture(scope="module")
def pairs(request) -> list[PreferencePair]:
    pos = ["good", "great", "happy", "love", "nice", "kind", "safe", "thanks"]
    neg = ["bad", "terrible", "sad", "hate", "rude", "harm", "kill", "steal"]
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(48):
        a, b = pos[int(torch.randint(8, (1,), generator=g))], neg[int(torch.randint(8, (1,), generator=g))]
        out.append(PreferencePair(f"what do you think w{i % 20}", f"it is {a} w{(i * 7) % 20}", f"it is {b} w{(i * 3) % 20}"))
    return out


@pytest.fixture(scope="module")
def fitted(tiny_bert_dir, pairs) -> LaplaceLoRA:
    model = train_map(tiny_model(tiny_bert_dir), pairs[:40])
    la = LaplaceLoRA(model, include_head=True, low_rank=8).fit(pairs[:40], batch_size=16)
    la.optimize_prior_precision()
    return la


def test_fit_from_pairs_equals_fit_from_collator_loader(fitted, pairs):
    loader = DataLoader(PreferenceDataset(pairs[:40], fitted.model.encoder), batch_size=7, collate_fn=PreferenceCollator(fitted.model.encoder))
    other = LaplaceLoRA(fitted.model, include_head=True, low_rank=8).fit(loader)
    assert other.n_data == fitted.n_data == 40
    assert other.log_likelihood == pytest.approx(fitted.log_likelihood, rel=1e-10)
    for name, block in fitted.curvature.items():
        torch.testing.assert_close(other.curvature[name].dense(), block.dense())


def test_score_before_fit_and_bad_config_raise(tiny_bert_dir):
    la = LaplaceLoRA(tiny_model(tiny_bert_dir))
    with pytest.raises(RuntimeError, match="not fitted"):
        la.score(["hi"], ["yes"])
    with pytest.raises(ValueError, match="kfac"):
        LaplaceLoRA(la.model, kfac="diag")
    with pytest.raises(ValueError, match="prior_precision"):
        LaplaceLoRA(la.model, prior_precision=0.0)


def test_save_load_reproduces_scores(fitted, pairs, tmp_path):
    from bayesrm.registry import load_scorer

    test = pairs[40:]
    prompts, chosen, rejected = [p.prompt for p in test], [p.chosen for p in test], [p.rejected for p in test]
    fitted.save_pretrained(tmp_path / "post")
    loaded = load_scorer(tmp_path / "post")
    assert isinstance(loaded, LaplaceLoRA) and loaded.prior_precision == fitted.prior_precision
    loaded.model.double()
    for name in fitted.curvature:  # factors were saved in the model's dtype (float64 here)
        loaded.curvature[name] = loaded.curvature[name].to(dtype=torch.float64)
    a, b = fitted.score(prompts, chosen), loaded.score(prompts, chosen)
    torch.testing.assert_close(b.mean, a.mean)
    torch.testing.assert_close(b.var, a.var)
    torch.testing.assert_close(loaded.score_pairs(prompts, chosen, rejected).var, fitted.score_pairs(prompts, chosen, rejected).var)
    assert loaded.log_marginal_likelihood() == pytest.approx(fitted.log_marginal_likelihood(), rel=1e-6)
    (tmp_path / "post" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError):
        LaplaceLoRA.from_pretrained(tmp_path / "post")


def test_laplace_ensemble_mixture_and_save_load(tiny_bert_dir, pairs, tmp_path):
    members = [train_map(tiny_model(tiny_bert_dir, seed=s), pairs[:40], steps=6) for s in (0, 1)]
    ens = LaplaceEnsemble(members, include_head=False, low_rank=8, prior_precision=2.0).fit(pairs[:40], batch_size=20)
    test = pairs[40:]
    prompts, chosen = [p.prompt for p in test], [p.chosen for p in test]
    pred = ens.score(prompts, chosen)
    own = [la.score(prompts, chosen) for la in ens.posteriors]
    mus, vs = torch.stack([p.mean for p in own]), torch.stack([p.var for p in own])
    torch.testing.assert_close(pred.mean, mus.mean(0))
    torch.testing.assert_close(pred.var, vs.mean(0) + ((mus - mus.mean(0)) ** 2).mean(0))
    assert pred.members.shape == (2, len(test))
    ens.save_pretrained(tmp_path / "ens")
    loaded = LaplaceEnsemble.from_pretrained(tmp_path / "ens")
    for la in loaded.posteriors:
        la.model.double()
        la.curvature = {n: c.to(dtype=torch.float64) for n, c in la.curvature.items()}
    torch.testing.assert_close(loaded.score(prompts, chosen).var, pred.var)


def test_cli_fits_and_saves_a_posterior(fitted, pairs, tmp_path):
    from bayesrm.cli import laplace as cli

    model_dir, data = tmp_path / "rm", tmp_path / "pairs.jsonl"
    fitted.model.float().save_pretrained(model_dir)
    fitted.model.double()
    data.write_text("".join(json.dumps({"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected}) + "\n" for p in pairs))
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers())
    args = parser.parse_args(["laplace", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "post"), "--max-pairs", "25",
                              "--test-fraction", "0.2"])
    assert args.run(args) == 0
    la = LaplaceLoRA.from_pretrained(tmp_path / "post")
    assert la.n_data == 20 and la.prior_precision != 1.0  # fitted on the training part (80% of 25) only
    args = parser.parse_args(["laplace", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "p2"), "--prior-precision", "3.5"])
    assert args.run(args) == 0
    assert LaplaceLoRA.from_pretrained(tmp_path / "p2").prior_precision == 3.5
    # flags are generated from LaplaceConfig, which refuses a non-positive prior precision
    args = parser.parse_args(["laplace", "--model", str(model_dir), "--data", str(data), "--out", str(tmp_path / "p3"), "--prior-precision", "-1"])
    with pytest.raises(ValueError, match="prior_precision"):
        args.run(args)
    assert not (tmp_path / "p3" / "config.json").exists()
