"""Nuclear-norm diversity (UP-RLHF eq. 12): values and gradients against direct SVD, and its effect in training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bayesrm.models.reward_model import RewardModelConfig
from bayesrm.training.losses import bradley_terry_loss
from bayesrm.uncertainty.base import EnsembleConfig
from bayesrm.uncertainty.diversity import nuclear_frobenius_ratio, stacked_lora_diversity
from bayesrm.uncertainty.lora_ensemble import LoRAEnsemble


def _modules(seed: int = 0, shapes=((3, 2, 7), (3, 2, 5))) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64) for s in shapes]  # each [K, r, d]


def test_value_matches_numpy_svd():
    mods = _modules()
    want = np.mean([np.linalg.svd(a.reshape(-1, a.shape[-1]).numpy(), compute_uv=False).sum() / np.linalg.norm(a.numpy()) for a in mods])
    assert float(stacked_lora_diversity(mods)) == pytest.approx(want, rel=1e-12)


def test_gradient_matches_closed_form_and_gradcheck():
    """d(||A||_* / ||A||_F)/dA = U V^T / F - N A / F^3 (full row rank A = U S V^T)."""
    a = _modules(1, shapes=((3, 2, 7),))[0].requires_grad_(True)
    stacked_lora_diversity([a]).backward()
    m = a.detach().reshape(6, 7).numpy()
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    n, f = s.sum(), np.linalg.norm(m)
    want = (u @ vt) / f - n * m / f**3
    np.testing.assert_allclose(a.grad.reshape(6, 7).numpy(), want, rtol=1e-10, atol=1e-12)
    assert torch.autograd.gradcheck(lambda x, y: stacked_lora_diversity([x, y]), tuple(t.requires_grad_(True) for t in _modules(2)))


def test_bounds_identical_and_orthogonal_members():
    """Identical members add no rank (D of one member); mutually orthogonal rows reach sqrt(K r)."""
    g = torch.Generator().manual_seed(0)
    one = torch.randn(1, 2, 8, generator=g, dtype=torch.float64)
    assert float(stacked_lora_diversity([one.repeat(4, 1, 1)])) == pytest.approx(float(nuclear_frobenius_ratio(one[0])), rel=1e-10)
    q, _ = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64))
    orthogonal = q.T[:6].reshape(3, 2, 8)  # 3 members x rank 2, all 6 rows orthonormal
    assert float(stacked_lora_diversity([orthogonal])) == pytest.approx(6**0.5, rel=1e-10)
    with pytest.raises(ValueError, match="no LoRA modules"):
        stacked_lora_diversity([])


def _train(tiny_bert_dir, toy_pairs, diversity: float, steps: int = 6) -> float:
    config = RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=32)
    ens = LoRAEnsemble.from_config(config, EnsembleConfig(members=3, diversity=diversity, seed=0))
    prompts = [p for p, _, _ in toy_pairs[:16]]
    batch = ens.encoder(prompts * 2, [c for _, c, _ in toy_pairs[:16]] + [r for _, _, r in toy_pairs[:16]])
    opt = torch.optim.Adam([p for p in ens.parameters() if p.requires_grad], lr=2e-2)
    for _ in range(steps):
        r = ens(batch["input_ids"], batch["attention_mask"])  # [K, 2B]
        loss, _ = bradley_terry_loss(r[:, :16], r[:, 16:])
        extra, stats = ens.extra_loss()
        opt.zero_grad()
        (loss + extra).backward()
        opt.step()
    assert stats["diversity"] == pytest.approx(float(ens.diversity()), rel=0.05)
    return float(ens.diversity())


def test_raising_lambda_raises_member_diversity(tiny_bert_dir, toy_pairs):
    start = LoRAEnsemble.from_config(
        RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=32), EnsembleConfig(members=3, seed=0)
    ).diversity()
    plain = _train(tiny_bert_dir, toy_pairs, diversity=0.0)
    diverse = _train(tiny_bert_dir, toy_pairs, diversity=1.0)
    assert diverse > plain + 0.01
    assert diverse > float(start)
    assert diverse <= 6**0.5 + 1e-6  # the bound sqrt(K r)
