"""Batched LoRA ensemble: equals K separate peft models, trains every member, keeps the backbone frozen, round-trips."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from bayesrm.data.schema import PreferencePair
from bayesrm.models.checkpoint import CheckpointError
from bayesrm.models.reward_model import RewardModel, RewardModelConfig
from bayesrm.training.losses import bradley_terry_loss
from bayesrm.uncertainty.base import EnsembleConfig
from bayesrm.uncertainty.heads import HeadEnsemble
from bayesrm.uncertainty.lora_ensemble import BatchedLoRALinear, LoRAEnsemble, transformer_blocks

K = 3


def _batch(model, texts: list[str]) -> dict[str, torch.Tensor]:
    return model.encoder(["what do you think"] * len(texts), texts)


TEXTS = ["it is good", "bad", "the cat is nice and kind thanks", "i hate it", "hello world w3 w4 w5 w6"]


def _randomise(ens: LoRAEnsemble, seed: int = 0) -> None:
    """Non-zero B (peft initialises B = 0, which would hide the LoRA path) and distinct heads."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a in ens.adapters().values():
            a.lora_B.copy_(torch.randn(a.lora_B.shape, generator=g) * 0.5)


def _peft_reference(ens: LoRAEnsemble, backbone_dir, k: int) -> RewardModel:
    """Member k rebuilt independently: a fresh peft RewardModel with the member's A, B and head copied in."""
    paths = ens.adapter_paths
    ref = RewardModel.from_config(replace(ens.config, target_modules=paths, lora_layers=None))
    layers = {n.split("base_model.model.", 1)[1]: m for n, m in ref.lora_modules().items()}
    assert sorted(layers) == sorted(paths)
    with torch.no_grad():
        for path, mine in ens.adapters().items():
            layers[path].lora_A["default"].weight.copy_(mine.lora_A[k])
            layers[path].lora_B["default"].weight.copy_(mine.lora_B[k])
        ref.head.weight.copy_(ens.heads.weight[k : k + 1])
    return ref.eval()


@pytest.mark.parametrize("arch", ["bert", "llama"])
@pytest.mark.parametrize("top_layers", [None, 1])
def test_batched_forward_equals_separate_peft_models(arch, top_layers, tiny_bert_dir, tiny_llama_dir):
    backbone_dir = tiny_bert_dir if arch == "bert" else tiny_llama_dir
    config = RewardModelConfig(backbone=str(backbone_dir), lora_r=2, max_length=32)
    ens = LoRAEnsemble.from_config(config, EnsembleConfig(members=K, top_layers=top_layers, seed=3)).eval()
    _randomise(ens)
    assert ens.layers == ([1] if top_layers == 1 else [0, 1])
    batch = _batch(ens, TEXTS)  # right-padded: rows have different lengths
    assert (batch["attention_mask"] == 0).any()
    with torch.no_grad():
        got = ens(batch["input_ids"], batch["attention_mask"])  # [K, B]
        want = torch.stack([_peft_reference(ens, backbone_dir, k)(**batch) for k in range(K)])
        as_rms = torch.stack([m.eval()(**batch) for m in ens.members_as_reward_models()])
    assert got.shape == (K, len(TEXTS))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(as_rms, want, atol=1e-5, rtol=0)
    assert (got.std(0) > 1e-3).all()  # members really differ


def test_top_layers_runs_bottom_blocks_once(tiny_bert_dir):
    config = RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=32)
    ens = LoRAEnsemble.from_config(config, EnsembleConfig(members=K, top_layers=1))
    _, blocks = transformer_blocks(ens.body.backbone)
    seen: list[int] = []
    hooks = [b.register_forward_hook(lambda m, i, o: seen.append((o[0] if isinstance(o, tuple) else o).shape[0])) for b in blocks]
    batch = _batch(ens, TEXTS[:4])
    ens(batch["input_ids"], batch["attention_mask"])
    for h in hooks:
        h.remove()
    assert seen == [4, K * 4]  # bottom block on [B], top block on [K*B]
    assert not blocks[0]._forward_pre_hooks  # broadcasting hooks are removed after the pass


def test_batched_lora_linear_matches_a_loop_over_members():
    torch.manual_seed(0)
    base = torch.nn.Linear(6, 5)
    layer = BatchedLoRALinear(base, members=4, r=3, alpha=6.0)
    torch.nn.init.normal_(layer.lora_B)
    x = torch.randn(4 * 2, 7, 6)  # [K*B, T, d_in]
    want = torch.cat([base(x[2 * k : 2 * k + 2]) + 2.0 * x[2 * k : 2 * k + 2] @ layer.lora_A[k].T @ layer.lora_B[k].T for k in range(4)])
    torch.testing.assert_close(layer(x), want)
    with pytest.raises(ValueError, match="multiple of 4"):
        layer(torch.randn(6, 7, 6))


def test_members_initialised_differently_and_seeded(tiny_bert_dir):
    config = RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=32)
    a = LoRAEnsemble.from_config(config, EnsembleConfig(members=K, seed=1))
    b = LoRAEnsemble.from_config(config, EnsembleConfig(members=K, seed=1))
    c = LoRAEnsemble.from_config(config, EnsembleConfig(members=K, seed=2))
    A = next(iter(a.adapters().values())).lora_A
    assert not torch.allclose(A[0], A[1])
    torch.testing.assert_close(A, next(iter(b.adapters().values())).lora_A)
    assert not torch.allclose(A, next(iter(c.adapters().values())).lora_A)
    assert not torch.allclose(a.heads.weight[0], a.heads.weight[1])


def _pairs(toy_pairs) -> list[PreferencePair]:
    return [PreferencePair(p, c, r) for p, c, r in toy_pairs]


def test_training_changes_every_member_and_never_the_backbone(tiny_bert_dir, toy_pairs):
    config = RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=32)
    ens = LoRAEnsemble.from_config(config, EnsembleConfig(members=K, top_layers=1))
    frozen = {n: p.detach().clone() for n, p in ens.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in ens.named_parameters() if p.requires_grad}
    assert frozen and all("lora_" in n or n.startswith("body.head.") for n in trainable)
    pairs = _pairs(toy_pairs)[:16]
    batch = ens.encoder.pad(ens.encoder.encode([p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs]))
    opt = torch.optim.Adam([p for p in ens.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        r = ens(batch["input_ids"], batch["attention_mask"])  # [K, 2B]
        loss, stats = bradley_terry_loss(r[:, :16], r[:, 16:])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert "acc_member_2" in stats
    after = dict(ens.named_parameters())
    for name, before in frozen.items():
        assert torch.equal(after[name], before), name
    for name, before in trainable.items():
        moved = (after[name].detach() - before).flatten(1).abs().amax(1)  # per member
        assert (moved > 0).all(), f"{name}: some member did not train"


def test_save_load_reproduces_members_exactly(tiny_bert_dir, tmp_path):
    config = RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=32)
    ens = LoRAEnsemble.from_config(config, EnsembleConfig(members=K, top_layers=1, diversity=0.1, seed=5))
    _randomise(ens, seed=1)
    ens.save_pretrained(tmp_path / "ens")
    meta = json.loads((tmp_path / "ens" / "config.json").read_text())
    assert meta["bayesrm_kind"] == "lora_ensemble" and meta["ensemble"]["members"] == K
    again = LoRAEnsemble.from_pretrained(tmp_path / "ens")
    assert again.ensemble == ens.ensemble
    p = ens.score(["q"] * len(TEXTS), TEXTS)
    q = again.score(["q"] * len(TEXTS), TEXTS)
    assert torch.equal(p.members, q.members)


def test_mismatched_or_corrupt_checkpoints_raise_checkpoint_error(tiny_bert_dir, tmp_path):
    config = RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=32)
    LoRAEnsemble.from_config(config, EnsembleConfig(members=K)).save_pretrained(tmp_path / "ens")
    cfg_path = tmp_path / "ens" / "config.json"
    meta = json.loads(cfg_path.read_text())
    meta["ensemble"]["members"] = K + 1  # config no longer matches the weights
    cfg_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="edited after saving"):
        LoRAEnsemble.from_pretrained(tmp_path / "ens")
    meta["format_version"] = 1  # as written before checksums: the structural checks still catch it
    del meta["weights_sha256"]
    cfg_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="shape"):
        LoRAEnsemble.from_pretrained(tmp_path / "ens")
    meta["ensemble"] = {"members": K, "ensemble_size": 2}
    cfg_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="ensemble_size"):
        LoRAEnsemble.from_pretrained(tmp_path / "ens")
    cfg_path.write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt JSON"):
        LoRAEnsemble.from_pretrained(tmp_path / "ens")
    HeadEnsemble.from_config(config, EnsembleConfig(members=K)).save_pretrained(tmp_path / "heads")
    with pytest.raises(CheckpointError, match="head_ensemble"):
        LoRAEnsemble.from_pretrained(tmp_path / "heads")
    (tmp_path / "heads" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):  # SHA-256 mismatch: "the weights are corrupt"
        HeadEnsemble.from_pretrained(tmp_path / "heads")


def test_merged_base_lora_is_saved_and_reapplied(tiny_llama_dir, tmp_path):
    """Two-stage ensembles: the stage-1 LoRA merged into the backbone survives save/load and member export."""
    config = RewardModelConfig(backbone=str(tiny_llama_dir), lora_r=2, max_length=32)
    stage1 = HeadEnsemble.from_config(config, EnsembleConfig(members=K))
    with torch.no_grad():
        for m in stage1.body.lora_modules().values():
            torch.nn.init.normal_(m.lora_B["default"].weight)
    base = stage1.shared_lora()
    assert base and all(v["lora_A"].shape[0] == 2 for v in base.values())
    plain = LoRAEnsemble.from_config(config, EnsembleConfig(members=K)).eval()
    ens = LoRAEnsemble.from_config(config, EnsembleConfig(members=K), base_lora=base).eval()
    for m in (ens, plain):
        m.heads.load_state_dict(stage1.heads.state_dict())
    batch = _batch(ens, TEXTS)
    with torch.no_grad():
        # with B = 0 the members add nothing: the ensemble on the merged backbone scores like stage 1
        torch.testing.assert_close(ens(**batch), stage1.eval()(**batch), atol=1e-5, rtol=0)
        assert not torch.allclose(ens(**batch), plain(**batch), atol=1e-3)
    _randomise(ens)
    ens.save_pretrained(tmp_path / "two")
    again = LoRAEnsemble.from_pretrained(tmp_path / "two").eval()
    rms = ens.members_as_reward_models()
    with torch.no_grad():
        assert torch.equal(again(**batch), ens(**batch))
        torch.testing.assert_close(torch.stack([m.eval()(**batch) for m in rms]), ens(**batch), atol=1e-5, rtol=0)
    rms[0].save_pretrained(tmp_path / "member0")  # keeps the merged backbone (train_backbone=True)
    with torch.no_grad():
        torch.testing.assert_close(RewardModel.from_pretrained(tmp_path / "member0").eval()(**batch), ens(**batch)[0], atol=1e-5, rtol=0)


def test_config_errors(tiny_bert_dir):
    config = RewardModelConfig(backbone=str(tiny_bert_dir), lora_r=2, max_length=32)
    with pytest.raises(ValueError, match="top_layers=3"):
        LoRAEnsemble.from_config(config, EnsembleConfig(members=2, top_layers=3))
    with pytest.raises(ValueError, match="either lora_layers"):
        LoRAEnsemble.from_config(replace(config, lora_layers=[1]), EnsembleConfig(members=2, top_layers=1))
    with pytest.raises(ValueError, match="lora_r >= 1"):
        LoRAEnsemble.from_config(replace(config, lora_r=0))
    with pytest.raises(ValueError, match="no nn.Linear"):
        LoRAEnsemble.from_config(replace(config, target_modules=["nonexistent"]))
