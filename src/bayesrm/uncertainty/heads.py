"""Head ("linear-layer") ensemble: one backbone, K scalar heads (efficient-ensemble paper, Zhang et al. 2024).

r_k(x, y) = w_k^T pool(h(x, y)),  k = 1..K,

with h the backbone (frozen when ``lora_r == 0``, else with one LoRA shared by all members). The
K heads are one [K, H] linear map, so all members cost one backbone pass.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from bayesrm.models.checkpoint import load_checkpoint, save_checkpoint
from bayesrm.models.reward_model import RewardModel, RewardModelConfig
from bayesrm.uncertainty.base import EnsembleConfig, EnsembleScorer, ensemble_meta, parse_ensemble_meta


class MemberHeads(nn.Module):
    """K scalar heads: weight [K, H] (bias-free, like RewardModel's head).

    features [B, H] (shared by all members)  -> rewards [K, B]
    features [K, B, H] (one set per member)  -> rewards [K, B]
    """

    def __init__(self, members: int, hidden: int, generator: torch.Generator | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(members, hidden, generator=generator) * hidden**-0.5)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if features.ndim == 2:
            return self.weight @ features.T  # [K, B]
        if features.ndim == 3 and features.shape[0] == self.weight.shape[0]:
            return torch.einsum("kbh,kh->kb", features, self.weight)  # [K, B]
        raise ValueError(f"features must be [B, H] or [{self.weight.shape[0]}, B, H], got {tuple(features.shape)}")


def install_member_heads(body: RewardModel, ensemble: EnsembleConfig) -> RewardModel:
    """Replace a RewardModel's scalar head by K seeded member heads (its saving and loading then cover them)."""
    generator = torch.Generator().manual_seed(ensemble.seed)
    body.head = MemberHeads(ensemble.members, body.backbone.config.hidden_size, generator).to(body.head.weight.device)
    return body


class SharedBodyEnsemble(EnsembleScorer):
    """Ensembles built around one :class:`RewardModel` (``self.body``) whose head is :class:`MemberHeads`."""

    body: nn.Module

    @property
    def encoder(self):  # type: ignore[override]
        return self.body.encoder

    @property
    def device(self) -> torch.device:
        return self.body.device

    @property
    def heads(self) -> MemberHeads:
        return self.body.head  # type: ignore[return-value]


class HeadEnsemble(SharedBodyEnsemble, nn.Module):
    """K scalar heads on one (frozen or shared-LoRA) backbone; ``forward`` -> [K, B] in one backbone pass.

    body: a :class:`RewardModel` (backbone, optional shared LoRA, pooling, encoder) whose head is
    the [K, H] :class:`MemberHeads`.
    """

    KIND = "head_ensemble"

    def __init__(self, body: RewardModel, ensemble: EnsembleConfig):
        super().__init__()
        if not isinstance(body.head, MemberHeads) or body.head.weight.shape[0] != ensemble.members:
            install_member_heads(body, ensemble)
        self.body = body
        self.ensemble = ensemble

    @classmethod
    def from_config(cls, config: RewardModelConfig, ensemble: EnsembleConfig | None = None) -> "HeadEnsemble":
        ensemble = ensemble or EnsembleConfig()
        return cls(RewardModel.from_config(config, seed=ensemble.seed), ensemble)

    @classmethod
    def from_backbone(
        cls, config: RewardModelConfig, backbone: nn.Module, tokenizer: Any, is_decoder: bool, ensemble: EnsembleConfig | None = None
    ) -> "HeadEnsemble":
        ensemble = ensemble or EnsembleConfig()
        torch.manual_seed(ensemble.seed)
        return cls(RewardModel.from_backbone(config, backbone, tokenizer, is_decoder), ensemble)

    # ---- what the trainer and scorer use ----------------------------------------------------
    @property
    def config(self) -> RewardModelConfig:
        return self.body.config


    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask [B, T] -> member rewards [K, B]."""
        return self.heads(self.body.features(input_ids, attention_mask))

    def shared_lora(self) -> dict[str, dict[str, torch.Tensor]]:
        """The shared LoRA as {module path in the bare backbone: {lora_A [r, d_in], lora_B [d_out, r], scaling []}}."""
        out = {}
        prefix = "backbone.base_model.model."
        for name, module in self.body.lora_modules().items():
            adapter = module.active_adapters[0]
            out[name.removeprefix(prefix)] = {
                "lora_A": module.lora_A[adapter].weight.detach().clone(),
                "lora_B": module.lora_B[adapter].weight.detach().clone(),
                "scaling": torch.tensor(float(module.scaling[adapter])),
            }
        return out

    # ---- persistence -----------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        save_checkpoint(
            directory, self.KIND, ensemble_meta(self.config, self.ensemble),
            self.body.saved_state_dict(), self.body.backbone_fingerprint(),
        )

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str | torch.device = "cpu", *,
        trust_remote_code: bool = False, allow_external_paths: bool = False,
    ) -> "HeadEnsemble":
        meta, tensors = load_checkpoint(directory, cls.KIND, allow_external_paths)
        config, ensemble = parse_ensemble_meta(meta, directory, trust_remote_code)
        model = cls.from_config(config, ensemble)
        model.body.load_saved_state(tensors, directory, meta.get("backbone_fingerprint"))
        return model.to(device)
