"""The reward interface: a function of a :class:`~bayesrm.types.RewardPrediction` (DESIGN.md section 2).

A reward maps a prediction for B (prompt, response) pairs to a reward tensor [B]. Some rewards
need statistics of reference-policy samples (per-prompt reference levels, a standardisation);
they get them from :meth:`Reward.fit`. Some carry running state across batches (UP-RLHF's mean
uncertainty); it is exposed through ``state_dict()`` / ``load_state_dict()`` so an RL run resumes
exactly. Concrete rewards are dataclasses: fields marked with :func:`param` are the
hyper-parameters shown by :meth:`Reward.spec` and settable from a spec string.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import field, fields, is_dataclass
from typing import Any, ClassVar, Mapping, Sequence, Union

import torch

from bayesrm.types import RewardPrediction

PromptId = Union[str, int]
PromptIds = Sequence[PromptId]


def param(default: Any, **kwargs: Any) -> Any:
    """A dataclass field that is a user-facing hyper-parameter (shown in ``spec()``, parsed from strings)."""
    return field(default=default, metadata={"param": True}, **kwargs)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class Reward(ABC):
    """Base class of conservative rewards and reward transforms."""

    name: ClassVar[str] = "reward"

    @abstractmethod
    def __call__(self, pred: RewardPrediction, prompt_ids: PromptIds | None = None) -> torch.Tensor:
        """Reward [B] of a prediction for B (prompt, response) pairs."""

    def fit(self, pred: RewardPrediction, prompt_ids: PromptIds | None = None) -> "Reward":
        """Fit reference statistics on reference-policy samples; a no-op for rewards that need none."""
        for child in self._children().values():
            child.fit(pred, prompt_ids)
        return self

    uses_members: ClassVar[bool] = False
    """Set by rewards that read ``RewardPrediction.members`` themselves (``min``)."""

    @property
    def needs_members(self) -> bool:
        """Whether this reward (or a stage of it) needs ensemble members, i.e. cannot score the
        prediction of a single model or a Laplace posterior (``members`` None)."""
        return self.uses_members or any(child.needs_members for child in self._children().values())

    def is_fitted(self) -> bool:
        """Whether every stage that needs reference statistics (``fit``) has them."""
        return all(child.is_fitted() for child in self._children().values())

    def needs_reference(self) -> bool:
        """Whether some stage needs per-prompt reference levels from reference-policy samples (log_sigmoid)."""
        return any(child.needs_reference() for child in self._children().values())

    def add_reference(self, pred: RewardPrediction, prompt_ids: PromptIds | None = None) -> None:
        """Add per-prompt reference levels for *new* prompts from their reference-policy samples, keeping
        everything already fitted (standardisation, the levels of earlier prompts). Call ``fit`` first."""
        for child in self._children().values():
            child.add_reference(pred, prompt_ids)

    def stages(self) -> list["Reward"]:
        """This reward and every nested one, depth first."""
        out: list[Reward] = [self]
        for child in self._children().values():
            out += child.stages()
        return out

    def spec(self) -> str:
        """A readable, parseable description, e.g. ``std:k=2`` or ``std:k=2|log_sigmoid:q=0.85``."""
        params = [
            f"{f.name}={_fmt(getattr(self, f.name))}"
            for f in (fields(self) if is_dataclass(self) else ())
            if f.metadata.get("param")
        ]
        own = self.name + (":" + ",".join(params) if params else "")
        base = self._children().get("base")
        return f"{base.spec()}|{own}" if base is not None else own

    # ---- state (running statistics) -------------------------------------------------------
    def _children(self) -> dict[str, "Reward"]:
        """Nested rewards by attribute path (``base``, ``rewards.0``, ...)."""
        out: dict[str, Reward] = {}
        for f in fields(self) if is_dataclass(self) else ():
            value = getattr(self, f.name)
            if isinstance(value, Reward):
                out[f.name] = value
            elif isinstance(value, (list, tuple)):
                out.update({f"{f.name}.{i}": v for i, v in enumerate(value) if isinstance(v, Reward)})
        return out

    def _own_state(self) -> dict[str, torch.Tensor]:
        return {}

    def _load_own_state(self, state: Mapping[str, torch.Tensor]) -> None:
        if state:
            raise KeyError(f"{type(self).__name__} has no state, got keys {sorted(state)}")

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Running state of this reward and its children, as flat ``{name: tensor}``."""
        state = dict(self._own_state())
        for prefix, child in self._children().items():
            state.update({f"{prefix}.{k}": v for k, v in child.state_dict().items()})
        return state

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned (e.g. when resuming an RL run)."""
        state = dict(state)
        for prefix, child in self._children().items():
            head = prefix + "."
            child.load_state_dict({k[len(head):]: state.pop(k) for k in list(state) if k.startswith(head)})
        self._load_own_state(state)


def as_prompt_list(prompt_ids: PromptIds | None, batch: int, who: str) -> list[PromptId]:
    """Check that one prompt id is given per example."""
    if prompt_ids is None:
        raise ValueError(f"{who} needs prompt_ids (one per example) to look up per-prompt reference levels")
    ids = list(prompt_ids)
    if len(ids) != batch:
        raise ValueError(f"{who}: got {len(ids)} prompt_ids for a batch of {batch} predictions")
    return ids
