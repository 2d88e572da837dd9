"""Reward transforms and combinations (Wang et al. 2024, "Transforming and combining rewards for
aligning large language models"), and standardisation.

- ``LogSigmoid``: u(x, y) = log sigmoid(r(x, y) - r_ref(x)), r computed by any base reward
  (e.g. mu - k sigma). r_ref(x) is a per-prompt reference level: a quantile (default 0.85) of r
  over reference-policy samples for x, or the reward of a given reference response.
  u is the log-probability that y is better than the reference, so it saturates above r_ref
  (little gain from pushing an already good response further, which curbs reward hacking) and
  emphasises improving poor responses.
- ``SumOf``: sum_j u_j over several reward models, each scoring its own property; for
  log-sigmoid-transformed rewards the sum is the log-probability that *all* properties hold
  under independent judgements (logical AND).
- ``Standardized``: z-score the prediction with a location and scale fixed from reference
  samples, so that penalty weights k mean "k standard deviations of the reward".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

from bayesrm.rewards.base import PromptId, PromptIds, Reward, as_prompt_list, param
from bayesrm.rewards.conservative import Mean
from bayesrm.types import RewardPrediction


class PromptReference:
    """Reference-policy rewards grouped by prompt: ``{prompt_id: rewards of its samples}``.

    Built from flat ``(prompt_ids [M], rewards [M])``. ``quantile(q)`` gives each prompt's
    q-quantile (linear interpolation, as ``numpy.quantile``'s default); with one sample per prompt
    (a reference response) every quantile is that sample's reward.
    """

    def __init__(self, prompt_ids: PromptIds, rewards: torch.Tensor) -> None:
        rewards = torch.as_tensor(rewards).detach().reshape(-1)
        ids = list(prompt_ids)
        if len(ids) != rewards.numel():
            raise ValueError(f"PromptReference: {len(ids)} prompt_ids but {rewards.numel()} rewards")
        if not torch.isfinite(rewards).all():
            raise ValueError("PromptReference: reference rewards contain NaN or inf")
        groups: dict[PromptId, list[int]] = {}
        for i, pid in enumerate(ids):
            groups.setdefault(pid, []).append(i)
        values = rewards.double().cpu()
        self._samples = {pid: values[idx] for pid, idx in groups.items()}
        self._cache: dict[float, dict[PromptId, float]] = {}

    @classmethod
    def from_prediction(
        cls, prompt_ids: PromptIds, pred: RewardPrediction, reward: Reward | None = None
    ) -> "PromptReference":
        """Reference levels of ``reward`` (default the mean) over reference-policy samples."""
        reward = reward or Mean()
        return cls(prompt_ids, reward(pred, prompt_ids))

    def extend(self, prompt_ids: PromptIds, rewards: torch.Tensor) -> None:
        """Add the reference rewards of prompts that have none yet (a prompt is sampled once: refuses known ids)."""
        new = PromptReference(prompt_ids, rewards)
        known = [pid for pid in new._samples if pid in self._samples]
        if known:
            raise ValueError(f"PromptReference.extend: prompts {known[:3]} already have reference samples")
        self._samples.update(new._samples)
        self._cache.clear()

    def to_state(self) -> list[list]:
        """JSON-able [[prompt_id, [rewards...]], ...] (float64 values round-trip exactly through JSON)."""
        return [[pid, v.tolist()] for pid, v in self._samples.items()]

    @classmethod
    def from_state(cls, state: Sequence[Sequence]) -> "PromptReference":
        ids, values = [], []
        for item in state:
            if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[1], (list, tuple)) and item[1]):
                raise ValueError(f"PromptReference state: expected [prompt_id, [rewards...]], got {item!r:.80}")
            ids += [item[0]] * len(item[1])
            values += list(item[1])
        return cls(ids, torch.tensor(values, dtype=torch.float64))

    def __len__(self) -> int:
        return len(self._samples)

    def __contains__(self, prompt_id: object) -> bool:
        return prompt_id in self._samples

    def samples(self, prompt_id: PromptId) -> torch.Tensor:
        """float64 rewards of the reference samples of one prompt."""
        return self._samples[prompt_id]

    def quantile(self, q: float) -> dict[PromptId, float]:
        """``{prompt_id: q-quantile of its reference rewards}``."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"quantile q must be in [0, 1], got {q}")
        if q not in self._cache:
            self._cache[q] = {pid: float(torch.quantile(v, q)) for pid, v in self._samples.items()}
        return self._cache[q]


def _lookup(levels: Mapping[PromptId, float], ids: list[PromptId], who: str) -> list[float]:
    missing = [pid for pid in dict.fromkeys(ids) if pid not in levels]
    if missing:
        raise KeyError(
            f"{who}: no reference level for prompt ids {missing[:5]}{' ...' if len(missing) > 5 else ''} "
            f"({len(levels)} prompts have one); fit() on reference samples of these prompts"
        )
    return [levels[pid] for pid in ids]


@dataclass
class LogSigmoid(Reward):
    """u = log sigmoid(r - r_ref(x)), r = base(pred) (Wang et al. 2024, eq. for the transformed reward).

    ``reference`` is one of: a :class:`PromptReference` of reference-policy rewards (its
    ``q``-quantile per prompt is used), a mapping ``{prompt_id: r_ref}`` (e.g. the rewards of given
    reference responses), or one number for every prompt. ``fit(pred, prompt_ids)`` builds the
    PromptReference from reference-policy samples scored with ``base``.
    """

    name = "log_sigmoid"
    base: Reward = field(default_factory=Mean)
    reference: PromptReference | Mapping[PromptId, float] | float | None = None
    q: float = param(0.85)

    def __post_init__(self) -> None:
        if not 0.0 <= self.q <= 1.0:
            raise ValueError(f"LogSigmoid.q must be in [0, 1], got {self.q}")

    def fit(self, pred: RewardPrediction, prompt_ids: PromptIds | None = None) -> "LogSigmoid":
        """Fit base, then the levels from these reference samples (given levels, a number or mapping, are kept)."""
        ids = as_prompt_list(prompt_ids, len(pred), "LogSigmoid.fit")
        self.base.fit(pred, ids)
        if self.reference is None or isinstance(self.reference, PromptReference):
            self.reference = PromptReference(ids, self.base(pred, ids))
        return self

    def is_fitted(self) -> bool:
        return self.reference is not None and self.base.is_fitted()

    def needs_reference(self) -> bool:
        """True unless the levels were given (a number or {prompt_id: level}) rather than fitted on samples."""
        return self.reference is None or isinstance(self.reference, PromptReference) or self.base.needs_reference()

    def add_reference(self, pred: RewardPrediction, prompt_ids: PromptIds | None = None) -> None:
        ids = as_prompt_list(prompt_ids, len(pred), "LogSigmoid.add_reference")
        self.base.add_reference(pred, ids)
        if self.reference is None:
            self.reference = PromptReference(ids, self.base(pred, ids))
        elif isinstance(self.reference, PromptReference):
            self.reference.extend(ids, self.base(pred, ids))

    def _own_state(self) -> dict:
        """The fitted reference samples (JSON-able, so RL checkpoints restore the levels of every prompt)."""
        return {"reference": self.reference.to_state()} if isinstance(self.reference, PromptReference) else {}

    def _load_own_state(self, state: Mapping) -> None:
        extra = set(state) - {"reference"}
        if extra:
            raise KeyError(f"LogSigmoid state has unexpected keys {sorted(extra)}")
        if "reference" in state:
            self.reference = PromptReference.from_state(state["reference"])

    def levels(self, prompt_ids: PromptIds | None, like: torch.Tensor) -> torch.Tensor:
        """r_ref(x) [B] for the batch's prompts, on ``like``'s device and dtype."""
        ref = self.reference
        if ref is None:
            raise RuntimeError(
                "LogSigmoid has no reference: call fit(reference_pred, prompt_ids) on reference-policy "
                "samples, or pass reference= (PromptReference, {prompt_id: reward} or a number)"
            )
        if isinstance(ref, (int, float)):
            return torch.full_like(like, float(ref))
        ids = as_prompt_list(prompt_ids, like.shape[0], "LogSigmoid")
        levels = ref.quantile(self.q) if isinstance(ref, PromptReference) else ref
        return torch.tensor(_lookup(levels, ids, "LogSigmoid"), dtype=like.dtype, device=like.device)

    def __call__(self, pred: RewardPrediction, prompt_ids: PromptIds | None = None) -> torch.Tensor:
        r = self.base(pred, prompt_ids)  # [B]
        return F.logsigmoid(r - self.levels(prompt_ids, r))  # [B]


@dataclass
class SumOf(Reward):
    """sum_j reward_j(pred_j): one reward per model / property, each from its own prediction.

    With log-sigmoid rewards this is log P(all properties hold) under independent judgements,
    the logical AND of Wang et al. 2024. Call with a sequence of predictions (one per reward).
    """

    name = "sum"
    rewards: Sequence[Reward] = ()

    def __post_init__(self) -> None:
        self.rewards = list(self.rewards)
        if not self.rewards:
            raise ValueError("SumOf needs at least one reward")

    def _check(self, preds: Sequence[RewardPrediction]) -> None:
        if isinstance(preds, RewardPrediction) or len(preds) != len(self.rewards):
            got = 1 if isinstance(preds, RewardPrediction) else len(preds)
            raise ValueError(f"SumOf of {len(self.rewards)} rewards needs {len(self.rewards)} predictions, got {got}")
        sizes = {len(p) for p in preds}
        if len(sizes) > 1:
            raise ValueError(f"SumOf: predictions have different batch sizes {sorted(sizes)}")

    def fit(self, preds: Sequence[RewardPrediction], prompt_ids: PromptIds | None = None) -> "SumOf":  # type: ignore[override]
        self._check(preds)
        for reward, pred in zip(self.rewards, preds):
            reward.fit(pred, prompt_ids)
        return self

    def add_reference(self, preds: Sequence[RewardPrediction], prompt_ids: PromptIds | None = None) -> None:  # type: ignore[override]
        self._check(preds)
        for reward, pred in zip(self.rewards, preds):
            reward.add_reference(pred, prompt_ids)

    def __call__(self, preds: Sequence[RewardPrediction], prompt_ids: PromptIds | None = None) -> torch.Tensor:  # type: ignore[override]
        self._check(preds)
        return torch.stack([r(p, prompt_ids) for r, p in zip(self.rewards, preds)]).sum(0)  # [J, B] -> [B]

    def spec(self) -> str:
        return " + ".join(f"({r.spec()})" for r in self.rewards)


@dataclass
class Standardizer:
    """z = (r - loc) / scale applied to a prediction: mean, members shift and scale, var scales by 1/scale^2.

    ``fit`` takes loc and scale (population std, ddof=0) of the mean rewards of reference samples,
    and then stays fixed, so rewards of different models and penalties are comparable.
    """

    loc: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"Standardizer.scale must be > 0, got {self.scale}")

    @classmethod
    def fit(cls, rewards: RewardPrediction | torch.Tensor) -> "Standardizer":
        r = (rewards.mean if isinstance(rewards, RewardPrediction) else torch.as_tensor(rewards)).double()
        scale = float(r.std(unbiased=False)) if r.numel() else 0.0
        if not scale > 0:
            raise ValueError(
                f"Standardizer.fit needs reference rewards that vary; got {r.numel()} values with std {scale}"
            )
        return cls(loc=float(r.mean()), scale=scale)

    def __call__(self, pred: RewardPrediction) -> RewardPrediction:
        members = None if pred.members is None else (pred.members - self.loc) / self.scale  # [K, B]
        return RewardPrediction(
            mean=(pred.mean - self.loc) / self.scale, var=pred.var / self.scale**2, members=members
        )

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"loc": torch.tensor(self.loc, dtype=torch.float64), "scale": torch.tensor(self.scale, dtype=torch.float64)}

    def load_state_dict(self, state: Mapping[str, torch.Tensor | float]) -> None:
        loc, scale = float(state["loc"]), float(state["scale"])
        if not scale > 0:
            raise ValueError(f"Standardizer state has scale {scale}; must be > 0")
        self.loc, self.scale = loc, scale


@dataclass
class Standardized(Reward):
    """base(z-scored prediction); ``fit`` fixes the standardisation on reference samples, then fits base."""

    name = "zscore"
    base: Reward = field(default_factory=Mean)
    standardizer: Standardizer | None = None

    def fit(self, pred: RewardPrediction, prompt_ids: PromptIds | None = None) -> "Standardized":
        self.standardizer = Standardizer.fit(pred)
        self.base.fit(self.standardizer(pred), prompt_ids)
        return self

    def is_fitted(self) -> bool:
        return self.standardizer is not None and self.base.is_fitted()

    def add_reference(self, pred: RewardPrediction, prompt_ids: PromptIds | None = None) -> None:
        if self.standardizer is None:
            raise RuntimeError("Standardized.add_reference before fit: the first reference samples fix the standardisation")
        self.base.add_reference(self.standardizer(pred), prompt_ids)

    def __call__(self, pred: RewardPrediction, prompt_ids: PromptIds | None = None) -> torch.Tensor:
        if self.standardizer is None:
            raise RuntimeError("Standardized reward is not fitted: call fit(reference_pred) or pass standardizer=")
        return self.base(self.standardizer(pred), prompt_ids)

    def spec(self) -> str:
        return f"zscore|{self.base.spec()}"

    def _own_state(self) -> dict[str, torch.Tensor]:
        return {} if self.standardizer is None else {f"standardizer.{k}": v for k, v in self.standardizer.state_dict().items()}

    def _load_own_state(self, state: Mapping[str, torch.Tensor]) -> None:
        if state:
            self.standardizer = self.standardizer or Standardizer()
            self.standardizer.load_state_dict({k.removeprefix("standardizer."): v for k, v in state.items()})
