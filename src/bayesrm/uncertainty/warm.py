"""WARM: weight-averaged reward models (Ramé et al. 2024).

Several reward models fine-tuned from the same starting point (same backbone and LoRA layout,
different seeds, data orders or hyper-parameters) are averaged weight by weight into one model;
the result is an ordinary :class:`RewardModel` (a point model, var = 0) that saves and loads as
one. Only what a reward model saves is averaged (LoRA + head, or every weight with a trained
backbone); the frozen backbone is shared.

Note that averaging LoRA factors A and B separately is not averaging the updates B A; WARM's
linear-mode-connectivity argument is about the weights that are trained, which here are A and B.
"""

from __future__ import annotations

import copy
from dataclasses import asdict
from typing import Sequence

import torch

from bayesrm.models.reward_model import RewardModel


def average_reward_models(models: Sequence[RewardModel], weights: Sequence[float] | None = None) -> RewardModel:
    """One reward model whose saved weights are the (weighted) mean of ``models``' saved weights."""
    if len(models) < 1:
        raise ValueError("WARM needs at least one reward model")
    first = models[0]
    for i, m in enumerate(models[1:], start=1):
        if asdict(m.config) != asdict(first.config):
            raise ValueError(f"WARM: model {i} has a different config than model 0; only models of one layout average")
        if m.backbone_fingerprint() != first.backbone_fingerprint():
            raise ValueError(f"WARM: model {i} has a different backbone than model 0")
    w = torch.tensor([1.0] * len(models) if weights is None else list(weights), dtype=torch.float64)
    if w.shape[0] != len(models) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError("WARM: weights must be one non-negative number per model, not all zero")
    w = w / w.sum()
    states = [m.saved_state_dict() for m in models]
    averaged = {
        name: sum(float(wi) * s[name].double() for wi, s in zip(w, states)).to(tensor.dtype)
        for name, tensor in states[0].items()
    }
    merged = copy.deepcopy(first)
    merged.load_state_dict(averaged, strict=False)
    return merged
