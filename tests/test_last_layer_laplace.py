"""Last-layer Laplace against float64 references built by hand from the features."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bayesrm.data.schema import PreferencePair
from bayesrm.models.reward_model import RewardModel, RewardModelConfig
from bayesrm.registry import load_scorer
from bayesrm.uncertainty.last_layer import LastLayerLaplace

PROMPTS = ["how are you", "say hi", "tell me a joke", "what is two plus two"] * 2
RESPONSES = ["fine thanks", "hi there friend", "no", "four is the answer", "good", "bad bad", "ok", "maybe five"]


def tiny(tiny_bert_dir, seed: int = 0) -> RewardModel:
    config = RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=24)
    model = RewardModel.from_config(config, seed=seed)
    with torch.no_grad():
        model.head.weight.mul_(8.0)  # sizeable margins, so p_n (1 - p_n) varies across pairs
    return model


def pairs_of(toy_pairs) -> list[PreferencePair]:
    return [PreferencePair(prompt=p, chosen=c, rejected=r) for p, c, r in toy_pairs[:24]]


def features(model: RewardModel, prompts, responses) -> torch.Tensor:
    """[N, H] float64 pooled features, one response at a time (no batching, no padding)."""
    rows = []
    with torch.no_grad():
        for prompt, response in zip(prompts, responses):
            batch = model.encoder.pad(model.encoder.encode([prompt], [response]))
            rows.append(model.features(batch["input_ids"], batch["attention_mask"]).double()[0])
    return torch.stack(rows)


def test_precision_equals_autograd_hessian_and_variance_is_closed_form(tiny_bert_dir, toy_pairs):
    model = tiny(tiny_bert_dir)
    pairs = pairs_of(toy_pairs)
    ll = LastLayerLaplace(model, prior_precision=0.7).fit(pairs, batch_size=5)
    prompts = [p.prompt for p in pairs]
    d = features(model, prompts, [p.chosen for p in pairs]) - features(model, prompts, [p.rejected for p in pairs])
    w = model.head.weight.detach().reshape(-1).double()
    nll = lambda v: -F.logsigmoid(d @ v).sum()  # noqa: E731
    reference = torch.autograd.functional.hessian(nll, w) + 0.7 * torch.eye(w.numel(), dtype=torch.float64)
    torch.testing.assert_close(ll.precision(), reference, rtol=1e-6, atol=1e-7)
    assert math.isclose(ll.log_likelihood, float(-nll(w)), rel_tol=1e-9)
    assert ll.n_data == len(pairs)

    pred = ll.score(PROMPTS, RESPONSES, batch_size=3)
    phi = features(model, PROMPTS, RESPONSES)  # [B, H]
    sigma = torch.linalg.inv(reference)
    torch.testing.assert_close(pred.mean.double(), phi @ w, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pred.var.double(), torch.einsum("bh,hk,bk->b", phi, sigma, phi), rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(pred.mean, model.score(PROMPTS, RESPONSES).mean, rtol=1e-5, atol=1e-5)

    # Monte Carlo: sample w ~ N(w_MAP, Sigma) and take the sample variance of phi^T w
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(20000, w.numel(), dtype=torch.float64, generator=g)
    samples = w + eps @ torch.linalg.cholesky(sigma).T  # [S, H]
    mc_var = (samples @ phi.T).var(0)  # [B]
    torch.testing.assert_close(pred.var.double(), mc_var, rtol=0.05, atol=0)


def test_evidence_optimum_matches_dense_grid(tiny_bert_dir, toy_pairs):
    model = tiny(tiny_bert_dir, seed=1)
    ll = LastLayerLaplace(model).fit(pairs_of(toy_pairs), batch_size=8)
    w = ll.head_weight()
    h = w.numel()

    def evidence(lam: float) -> float:  # dense logdet, independent of the eigen shortcut
        sign, logdet = torch.linalg.slogdet(ll.ggn + lam * torch.eye(h, dtype=torch.float64))
        assert sign > 0
        return ll.log_likelihood - lam / 2 * float(w @ w) + h / 2 * math.log(lam) - float(logdet) / 2

    assert math.isclose(ll.log_evidence(3.0), evidence(3.0), rel_tol=1e-9)
    grid = torch.logspace(-4, 6, 4001, dtype=torch.float64).tolist()
    values = [evidence(x) for x in grid]
    best = grid[max(range(len(grid)), key=values.__getitem__)]
    lam = ll.optimize_prior_precision()
    assert ll.prior_precision == lam
    assert abs(math.log10(lam) - math.log10(best)) < 5e-3  # grid spacing is 2.5e-3 decades
    assert ll.log_evidence() >= max(values) - 1e-6
    torch.testing.assert_close(ll.covariance, torch.linalg.inv(ll.precision()), rtol=1e-6, atol=1e-9)


def test_round_trip_scores_identically(tiny_bert_dir, toy_pairs, tmp_path):
    ll = LastLayerLaplace(tiny(tiny_bert_dir, seed=2), prior_precision=2.5).fit(pairs_of(toy_pairs))
    before = ll.score(PROMPTS, RESPONSES, batch_size=4)
    assert bool((before.var > 0).all())
    ll.save_pretrained(tmp_path / "ll")
    loaded = load_scorer(tmp_path / "ll")
    assert isinstance(loaded, LastLayerLaplace) and loaded.config == ll.config
    assert loaded.n_data == ll.n_data and loaded.log_likelihood == ll.log_likelihood
    torch.testing.assert_close(loaded.ggn, ll.ggn, rtol=0, atol=0)
    after = loaded.score(PROMPTS, RESPONSES, batch_size=4)
    torch.testing.assert_close(after.mean, before.mean, rtol=0, atol=0)
    torch.testing.assert_close(after.var, before.var, rtol=0, atol=0)


def test_tampered_config_sections_are_checkpoint_errors(tiny_bert_dir, toy_pairs, tmp_path):
    """A re-signed config.json with a bad last_layer_laplace section: a CheckpointError naming the file and key."""
    import pytest

    from bayesrm.models.checkpoint import CheckpointError, update_meta

    ll = LastLayerLaplace(tiny(tiny_bert_dir, seed=2), prior_precision=2.5).fit(pairs_of(toy_pairs)[:8])
    ll.save_pretrained(tmp_path / "ll")
    where = f"{tmp_path / 'll' / 'config.json'}: last_layer_laplace"
    cases = {
        "unknown": ({"prior_precision": 2.5, "prior": 1.0}, f"{where}.prior: unknown key"),
        "missing": ({}, f"{where}: missing key 'prior_precision'"),
        "text": ({"prior_precision": "big"}, f"{where}.prior_precision: expected float, got str ('big')"),
        "bool": ({"prior_precision": True}, f"{where}.prior_precision: expected float, got bool"),
        "range": ({"prior_precision": -1.0}, f"{where}: prior_precision must be a positive number, got -1.0"),
        "absent": (None, f"{where}: expected an object, got NoneType"),
    }
    for name, (section, message) in cases.items():
        update_meta(tmp_path / "ll", last_layer_laplace=section)
        with pytest.raises(CheckpointError) as info:
            LastLayerLaplace.from_pretrained(tmp_path / "ll")
        assert message in str(info.value), (name, str(info.value))
    update_meta(tmp_path / "ll", last_layer_laplace={"prior_precision": 3})
    assert LastLayerLaplace.from_pretrained(tmp_path / "ll").prior_precision == 3.0
