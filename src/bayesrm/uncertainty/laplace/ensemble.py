"""Laplace on each ensemble member (Bayesian reward models paper, "LA ensemble").

Member k gives r_k ~ N(mu_k, var_k) (its own Laplace-LoRA posterior); the ensemble predictive is
the equal-weight mixture:  mean = avg_k mu_k,  var = avg_k var_k + var_k(mu_k)  (ddof=0).

An ensemble trained with bootstrap replicates (``EnsembleConfig.bootstrap``) saw each training pair
a member-specific number of times; ``fit(pairs, replicates=ensemble.bootstrap_replicates(pairs))``
fits member k's curvature on exactly its replicate (with multiplicity), as a Laplace approximation
of the posterior member k was trained towards.

    la = LaplaceEnsemble.from_ensemble(ensemble)
    la.fit(train_pairs, replicates=ensemble.bootstrap_replicates(train_pairs))  # None: all pairs for every member
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from bayesrm.data.schema import PreferencePair
from bayesrm.models.checkpoint import CheckpointError, confined_path, load_checkpoint, save_checkpoint
from bayesrm.models.reward_model import RewardModel
from bayesrm.types import Prompt, RewardPrediction
from bayesrm.uncertainty.laplace.posterior import LaplaceLoRA, PairData


class LaplaceEnsemble:
    """One LaplaceLoRA posterior per member reward model; scores as a Gaussian mixture."""

    KIND = "laplace_ensemble"

    def __init__(self, members: Sequence[RewardModel] | Sequence[LaplaceLoRA], **laplace_kwargs: Any):
        """members: reward models (each gets ``LaplaceLoRA(model, **laplace_kwargs)``) or fitted posteriors."""
        if not members:
            raise ValueError("a Laplace ensemble needs at least one member")
        self.posteriors = [m if isinstance(m, LaplaceLoRA) else LaplaceLoRA(m, **laplace_kwargs) for m in members]
        self.bootstrap = False  # whether member k was fitted on its own replicate (saved in config.json)

    @classmethod
    def from_ensemble(cls, ensemble: Any, **laplace_kwargs: Any) -> "LaplaceEnsemble":
        """From a LoRA / independent ensemble exposing ``members_as_reward_models()`` (or ``members``)."""
        getter = getattr(ensemble, "members_as_reward_models", None)
        members = getter() if callable(getter) else getattr(ensemble, "members", None)
        if not members or not all(isinstance(m, RewardModel) for m in members):
            raise TypeError(f"{type(ensemble).__name__} does not expose its members as RewardModels")
        return cls(list(members), **laplace_kwargs)

    def __len__(self) -> int:
        return len(self.posteriors)

    def fit(self, data: PairData, batch_size: int = 16, progress: bool = False,
            replicates: Sequence[Sequence[PreferencePair]] | None = None) -> "LaplaceEnsemble":
        """Fit every member's posterior on the same pairs (a list, or a re-iterable loader), or member k
        on ``replicates[k]`` (its bootstrap replicate; ``data`` is then ignored)."""
        if replicates is not None and len(replicates) != len(self):
            raise ValueError(f"{len(replicates)} bootstrap replicates for {len(self)} members")
        for k, la in enumerate(self.posteriors):
            la.fit(data if replicates is None else replicates[k], batch_size=batch_size, progress=progress)
        self.bootstrap = replicates is not None
        return self

    def optimize_prior_precision(self, **kwargs: Any) -> list[float]:
        """Each member's own evidence-maximising prior precision."""
        return [la.optimize_prior_precision(**kwargs) for la in self.posteriors]

    def _mixture(self, predict: Callable[[LaplaceLoRA], RewardPrediction]) -> RewardPrediction:
        preds = [predict(la) for la in self.posteriors]
        return RewardPrediction.mixture(torch.stack([p.mean for p in preds]), torch.stack([p.var for p in preds]))  # [K, B]

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str], batch_size: int = 32, progress: bool = False) -> RewardPrediction:
        """Mixture predictive of r(x, y); ``members`` holds each member's MAP reward [K, B]."""
        return self._mixture(lambda la: la.score(prompts, responses, batch_size=batch_size, progress=progress))

    def score_pairs(
        self,
        prompts: Sequence[Prompt],
        chosen: Sequence[str],
        rejected: Sequence[str],
        batch_size: int = 32,
        progress: bool = False,
    ) -> RewardPrediction:
        """Mixture predictive of the margin r(x, y_w) - r(x, y_l)."""
        return self._mixture(lambda la: la.score_pairs(prompts, chosen, rejected, batch_size=batch_size, progress=progress))

    def save_pretrained(self, directory: str | Path) -> None:
        """config.json (+ member prior precisions) and one posterior per ``member_{k}/``."""
        lams = torch.tensor([la.prior_precision for la in self.posteriors], dtype=torch.float64)
        def members(staging: Path) -> None:
            for k, la in enumerate(self.posteriors):
                la.save_pretrained(staging / f"member_{k}")

        meta = {"members": len(self), "bootstrap": self.bootstrap}
        save_checkpoint(directory, self.KIND, meta, {"prior_precision": lams}, extra=members)

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str | torch.device = "cpu", *,
        trust_remote_code: bool = False, allow_external_paths: bool = False,
    ) -> "LaplaceEnsemble":
        meta, _ = load_checkpoint(directory, cls.KIND, allow_external_paths)
        k = meta.get("members")
        if not isinstance(k, int) or k < 1:
            raise CheckpointError(f"{directory}/config.json: field 'members' must be a positive integer, got {k!r}")
        bootstrap = meta.get("bootstrap", False)  # absent in checkpoints older than the field
        if not isinstance(bootstrap, bool):
            raise CheckpointError(f"{directory}/config.json: field 'bootstrap' must be true or false, got {bootstrap!r}")
        where = f"{Path(directory) / 'config.json'}: members"
        out = cls([LaplaceLoRA.from_pretrained(confined_path(directory, f"member_{i}", where, allow_external_paths), device=device,
                                               trust_remote_code=trust_remote_code, allow_external_paths=allow_external_paths)
                   for i in range(k)])
        out.bootstrap = bootstrap
        return out
