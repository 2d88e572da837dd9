"""Independent ensemble: K reward models trained separately from different seeds (the deep-ensemble baseline).

Costs K backbones in memory and K passes per batch; it is the reference the cheaper ensembles are
measured against. Saved as a directory of K standard reward-model checkpoints plus a config, so
each member also loads on its own with :meth:`RewardModel.from_pretrained`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from bayesrm.models.checkpoint import CheckpointError, confined_path, load_checkpoint, save_checkpoint
from bayesrm.models.reward_model import RewardModel, RewardModelConfig
from bayesrm.uncertainty.base import EnsembleConfig, EnsembleScorer, ensemble_meta, parse_ensemble_meta


def member_dir(directory: str | Path, k: int) -> Path:
    return Path(directory) / f"member_{k}"


class IndependentEnsemble(EnsembleScorer, nn.Module):
    """K separately trained :class:`RewardModel` s behind the ensemble interface; ``forward`` -> [K, B]."""

    KIND = "independent_ensemble"

    def __init__(self, members: Sequence[RewardModel], ensemble: EnsembleConfig | None = None):
        super().__init__()
        if not members:
            raise ValueError("an independent ensemble needs at least one member")
        first = asdict(members[0].config)
        for k, m in enumerate(members[1:], start=1):
            if asdict(m.config) != first:
                raise ValueError(f"member {k} has a different reward-model config than member 0 (they must share one)")
        self.models = nn.ModuleList(members)
        self.ensemble = ensemble or EnsembleConfig(members=len(members))
        if self.ensemble.members != len(members):
            raise ValueError(f"ensemble config says {self.ensemble.members} members, got {len(members)}")

    @classmethod
    def from_config(cls, config: RewardModelConfig, ensemble: EnsembleConfig | None = None) -> "IndependentEnsemble":
        """K fresh reward models; member k is initialised with seed ``ensemble.seed + k``."""
        ensemble = ensemble or EnsembleConfig()
        return cls([RewardModel.from_config(config, seed=ensemble.seed + k) for k in range(ensemble.members)], ensemble)

    @property
    def config(self) -> RewardModelConfig:
        return self.models[0].config

    @property
    def encoder(self):  # type: ignore[override]
        return self.models[0].encoder

    @property
    def device(self) -> torch.device:
        return self.models[0].device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask [B, T] -> member rewards [K, B] (K backbone passes)."""
        return torch.stack([m(input_ids, attention_mask) for m in self.models])

    def members_as_reward_models(self) -> list[RewardModel]:
        return list(self.models)  # type: ignore[arg-type]

    # ---- persistence -----------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        """config.json (+ an empty weights file) and one reward-model checkpoint per member in member_<k>/."""
        meta = ensemble_meta(self.config, self.ensemble, member_dirs=[member_dir("", k).name for k in range(len(self.models))])
        def members(staging: Path) -> None:
            for k, model in enumerate(self.models):
                model.save_pretrained(member_dir(staging, k))

        save_checkpoint(directory, self.KIND, meta, {}, extra=members)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str | torch.device = "cpu", *,
        trust_remote_code: bool = False, allow_external_paths: bool = False,
    ) -> "IndependentEnsemble":
        meta, _ = load_checkpoint(directory, cls.KIND, allow_external_paths)
        config, ensemble = parse_ensemble_meta(meta, directory, trust_remote_code)
        members = []
        for k in range(ensemble.members):
            where = f"{Path(directory) / 'config.json'}: member {k}"
            path = confined_path(directory, member_dir("", k).name, where, allow_external_paths)
            model = RewardModel.from_pretrained(path, device, trust_remote_code=trust_remote_code,
                                                allow_external_paths=allow_external_paths)
            if asdict(model.config) != asdict(config):
                raise CheckpointError(f"{member_dir(directory, k)}: member config differs from {directory}/config.json")
            members.append(model)
        extra = member_dir(directory, ensemble.members)
        if extra.exists():
            raise CheckpointError(f"{extra}: more member directories than the {ensemble.members} config.json lists")
        return cls(members, ensemble)
