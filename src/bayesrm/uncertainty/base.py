"""What every reward-model ensemble shares: its config, batched scoring and per-member pair weights.

An ensemble's ``forward(input_ids [B, T], attention_mask [B, T])`` returns member rewards [K, B].
Scoring turns them into a :class:`~bayesrm.types.RewardPrediction` with

    mean = (1/K) sum_k r_k,    var = (1/K) sum_k (r_k - mean)^2    (population variance, ddof=0)

so ``std`` is UP-RLHF's uncertainty u(y|x) (eq. 13), which also divides by K, not K - 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch

from bayesrm.data.encoding import PairEncoder
from bayesrm.data.schema import PreferencePair
from bayesrm.models.checkpoint import CheckpointError, config_from_meta
from bayesrm.models.reward_model import RewardModelConfig, saved_model_config
from bayesrm.models.scoring import score_rewards
from bayesrm.types import Prompt, RewardPrediction

_BOOTSTRAP_CHUNK = 4096
"""Bootstrap weights are drawn in fixed chunks of pair indices, so a pair's weights never depend on batching."""


@dataclass
class EnsembleConfig:
    """How an ensemble is built and trained (the backbone / LoRA settings live in RewardModelConfig)."""

    members: int = 5
    """K, the number of members."""
    top_layers: int | None = None
    """LoRA ensembles: adapt only the top L transformer blocks; the frozen bottom runs once and is shared."""
    diversity: float = 0.0
    """LoRA ensembles: weight lambda of the nuclear-norm diversity term (loss = BT - lambda * D, UP-RLHF eq. 12)."""
    bootstrap: bool = False
    """Weight each training pair by an independent Poisson(1) count per member (online bagging)."""
    seed: int = 0
    """Seeds member initialisation and the bootstrap weights."""

    def __post_init__(self) -> None:
        if self.members < 1:
            raise ValueError(f"members must be >= 1, got {self.members}")
        if self.top_layers is not None and self.top_layers < 1:
            raise ValueError(f"top_layers must be >= 1 or None, got {self.top_layers}")
        if self.diversity < 0:
            raise ValueError(f"diversity must be >= 0, got {self.diversity}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "ensemble config") -> "EnsembleConfig":
        """From a checkpoint's ``ensemble`` section; unknown keys and wrong types are CheckpointErrors."""
        return config_from_meta(cls, data, source)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class EnsembleScorer:
    """Mixin for ``nn.Module`` ensembles whose forward returns [K, B].

    Requires ``self.encoder`` (a PairEncoder), ``self.device`` and ``self.ensemble`` (EnsembleConfig).
    """

    ensemble: EnsembleConfig
    encoder: PairEncoder

    @property
    def num_members(self) -> int:
        return self.ensemble.members

    def score(
        self,
        prompts: Sequence[Prompt],
        responses: Sequence[str],
        batch_size: int = 32,
        progress: bool = False,
    ) -> RewardPrediction:
        """Mean, population variance (ddof=0) and members [K, B] of the ensemble's rewards."""
        members = score_rewards(self, prompts, responses, batch_size, progress)  # type: ignore[arg-type]
        if members.ndim == 1:  # no inputs
            members = members.reshape(self.num_members, 0)
        return RewardPrediction.from_members(members)

    def member_weights(self, pair_index: torch.Tensor) -> torch.Tensor | None:
        """[K, B] Poisson(1) bootstrap counts of the pairs at ``pair_index`` [B] (None when bootstrap is off).

        Each (member, pair) count is fixed by the seed and the pair's dataset index, so every epoch
        and every batching sees the same resample: member k trains on its own bootstrap replicate.
        """
        if not self.ensemble.bootstrap:
            return None
        index = pair_index.detach().long().cpu()
        chunks = torch.unique(index // _BOOTSTRAP_CHUNK).tolist()
        table = {c: self._bootstrap_chunk(c) for c in chunks}
        out = torch.empty(self.num_members, index.numel())
        for c, counts in table.items():
            sel = (index // _BOOTSTRAP_CHUNK) == c  # [B]
            out[:, sel] = counts[:, index[sel] % _BOOTSTRAP_CHUNK]
        return out.to(pair_index.device)

    def bootstrap_replicates(self, pairs: Sequence[PreferencePair]) -> list[list[PreferencePair]] | None:
        """Member k's bootstrap replicate of the training ``pairs`` (in training order), or None when bootstrap is off.

        The pairs at index i repeated by ``member_weights`` count [k, i]: the data member k was trained on
        (the weighted loss of a batched ensemble equals the loss on this list).
        """
        counts = self.member_weights(torch.arange(len(pairs)))  # [K, N] or None
        return None if counts is None else [bootstrap_replicate(pairs, row) for row in counts]

    def _bootstrap_chunk(self, chunk: int) -> torch.Tensor:
        """[K, CHUNK] Poisson(1) counts for pair indices chunk*CHUNK .. (chunk+1)*CHUNK - 1."""
        gen = torch.Generator().manual_seed(1_000_003 * (self.ensemble.seed + 1) + chunk)
        return torch.poisson(torch.ones(self.num_members, _BOOTSTRAP_CHUNK), generator=gen)


def bootstrap_replicate(pairs: Sequence[PreferencePair], counts: torch.Tensor) -> list[PreferencePair]:
    """Each pair repeated by its bootstrap count (counts [N], whole numbers), in order."""
    if counts.shape != (len(pairs),):
        raise ValueError(f"{counts.shape[0] if counts.ndim else 0} counts for {len(pairs)} pairs")
    return [p for p, c in zip(pairs, counts.long().tolist()) for _ in range(c)]


def ensemble_meta(model_config: RewardModelConfig, ensemble: EnsembleConfig, **extra: Any) -> dict[str, Any]:
    """The config.json payload of an ensemble: its reward-model config and ensemble config."""
    return {"model": asdict(model_config), "ensemble": ensemble.to_dict(), **extra}


def parse_ensemble_meta(
    meta: dict[str, Any], source: str | Path, trust_remote_code: bool = False
) -> tuple[RewardModelConfig, EnsembleConfig]:
    """Inverse of :func:`ensemble_meta`, with errors naming the file and field; ``trust_remote_code`` is the caller's."""
    where = f"{Path(source) / 'config.json'}"
    for key in ("model", "ensemble"):
        if not isinstance(meta.get(key), dict):
            raise CheckpointError(f"{where}: field {key!r} missing or not an object")
    model_config = saved_model_config(meta, source, trust_remote_code)
    ensemble = EnsembleConfig.from_dict(meta["ensemble"], f"{where}: ensemble")
    return model_config, ensemble
