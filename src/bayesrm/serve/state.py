"""A conservative reward with the running state it keeps while serving, saved across restarts.

Two kinds of state live in the server:

- ``up``'s running mean of sigma (and any other ``Reward.state_dict()``, e.g. a fitted z-score):
  updated by every scored batch, in the order batches are scored.
- Per-prompt references of a ``log_sigmoid`` reward, ``r_ref(x)`` = the q-quantile of the base
  reward over the prompt's reference samples. POST /reference gives them explicitly (responses of
  the reference policy); otherwise the first ``reference_samples`` responses scored for a prompt
  become its reference samples. In RL those come from the earliest policy, close to the reference
  policy; a prompt first seen late in training gets a reference from the current policy, so prefer
  /reference before training when the prompt set is known.

:meth:`ServeState.save` writes everything atomically (``config.json`` + ``model.safetensors``
through bayesrm.models.checkpoint); :meth:`ServeState.load` restores it and refuses a state saved
for a different reward spec.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
import torch.nn.functional as F

from bayesrm.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from bayesrm.rewards import LogSigmoid, Reward, Standardized, UPPenalty
from bayesrm.types import RewardPrediction

KIND = "serve_state"


class ReferenceStore(Mapping):
    """``{prompt key: r_ref}``: the q-quantile (linear interpolation) of each prompt's reference samples."""

    def __init__(self, q: float, limit: int) -> None:
        self.q, self.limit = q, limit
        self.samples: dict[str, list[float]] = {}
        self.given: set[str] = set()  # prompts whose references came from POST /reference: never extended
        self._levels: dict[str, float] = {}

    def observe(self, keys: Sequence[str], values: torch.Tensor) -> None:
        """Add scored responses as reference samples of prompts that have fewer than ``limit``."""
        for key, value in zip(keys, values.tolist()):
            held = self.samples.setdefault(key, [])
            if len(held) < self.limit and key not in self.given:
                held.append(float(value))
                self._levels.pop(key, None)

    def replace(self, keys: Sequence[str], values: torch.Tensor) -> None:
        """Set the reference samples of the given prompts to exactly these values (POST /reference)."""
        fresh: dict[str, list[float]] = {}
        for key, value in zip(keys, values.tolist()):
            fresh.setdefault(key, []).append(float(value))
        for key, held in fresh.items():
            self.samples[key] = held
            self.given.add(key)
            self._levels.pop(key, None)

    def __getitem__(self, key: str) -> float:
        if key not in self._levels:
            values = torch.tensor(self.samples[key], dtype=torch.float64)
            self._levels[key] = float(torch.quantile(values, self.q))
        return self._levels[key]

    def __contains__(self, key: object) -> bool:
        return key in self.samples and bool(self.samples[key])

    def __iter__(self) -> Iterator[str]:
        return iter(self.samples)

    def __len__(self) -> int:
        return len(self.samples)


def _walk(reward: Reward) -> Iterator[Reward]:
    yield reward
    for child in reward._children().values():
        yield from _walk(child)


class ServeState:
    """A reward applied batch after batch, with its running state and per-prompt references."""

    def __init__(self, reward: Reward, reference_samples: int = 4) -> None:
        self.reward = reward
        self.spec = reward.spec()
        self.top = reward if isinstance(reward, LogSigmoid) else None
        self.store: ReferenceStore | None = None
        if self.top is not None and self.top.reference is None:
            self.store = ReferenceStore(self.top.q, reference_samples)
            self.top.reference = self.store
        inner = list(_walk(self.top.base if self.top is not None else reward))
        if any(isinstance(r, LogSigmoid) and not r.is_fitted() for r in inner):
            raise ValueError(f"reward {self.spec!r}: only the outermost log_sigmoid stage can keep references at serve time")
        self.up = next((r for r in _walk(reward) if isinstance(r, UPPenalty)), None)
        self.scored = 0

    # ---- scoring --------------------------------------------------------------------------
    def ready(self) -> str | None:
        """None when the reward can score; else why not (a z-score not yet fitted)."""
        if any(isinstance(r, Standardized) and r.standardizer is None for r in _walk(self.reward)):
            return f"reward {self.spec!r} needs its z-score fitted: POST /reference with reference-policy responses first"
        return None

    def apply(self, pred: RewardPrediction, keys: Sequence[str]) -> torch.Tensor:
        """Rewards [B] of one scored batch (updates the running state once)."""
        self.scored += len(pred)
        if self.store is None:
            return torch.as_tensor(self.reward(pred, list(keys)), dtype=torch.float64).float()
        base = self.top.base(pred, list(keys))  # [B], updates e.g. UP's running mean once
        self.store.observe(keys, base)
        return F.logsigmoid(base - self.top.levels(list(keys), base))  # [B]

    def fit_reference(self, pred: RewardPrediction, keys: Sequence[str]) -> dict[str, int]:
        """Fit the reward's reference statistics on reference-policy responses (z-score, per-prompt levels).

        Running statistics (UP's mean sigma) are left as they were: reference samples are not scored samples.
        """
        base = self.top.base if self.top is not None else self.reward
        if not base.is_fitted():
            base.fit(pred, list(keys))
        if self.top is None:
            return {"samples": len(pred), "prompts": len(set(keys))}
        if self.store is None:
            raise ValueError(f"reward {self.spec!r} was built with fixed references")
        running = base.state_dict()
        values = base(pred, list(keys))  # [B]
        base.load_state_dict(running)
        self.store.replace(keys, values)
        return {"samples": len(pred), "prompts": len(set(keys))}

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"reward": self.spec, "scored": self.scored}
        if self.up is not None:
            out.update(up_count=self.up.stats.count, u_bar=self.up.stats.mean)
        if self.store is not None:
            out["reference_prompts"] = len(self.store)
        return out

    # ---- persistence ----------------------------------------------------------------------
    def save(self, directory: str | Path) -> None:
        meta = {"reward": self.spec, "scored": self.scored}
        if self.store is not None:
            meta["references"] = self.store.samples
            meta["given_references"] = sorted(self.store.given)
        tensors = {f"reward.{k}": v.detach().cpu() for k, v in self.reward.state_dict().items()}
        tensors["scored"] = torch.tensor(self.scored, dtype=torch.int64)  # safetensors needs one tensor at least
        save_checkpoint(directory, KIND, meta, tensors)

    def load(self, directory: str | Path) -> None:
        meta, tensors = load_checkpoint(directory, KIND)
        if meta.get("reward") != self.spec:
            raise CheckpointError(f"{directory}: state was saved for reward {meta.get('reward')!r}, this server uses {self.spec!r}")
        state = {k[len("reward."):]: v for k, v in tensors.items() if k.startswith("reward.")}
        self.reward.load_state_dict(state)
        references = meta.get("references")
        if self.store is not None and isinstance(references, dict):
            self.store.samples = {str(k): [float(x) for x in v] for k, v in references.items()}
            self.store.given = {str(k) for k in meta.get("given_references", [])}
            self.store._levels.clear()
        self.scored = int(meta.get("scored", 0))
