"""An explicit registry of everything bayesrm saves: checkpoint kind -> class.

``load_scorer(dir)`` reads ``config.json``'s ``bayesrm_kind`` and calls that class's
``from_pretrained``. Classes are named as import strings so that loading one kind never imports
the others (PEFT-style explicit registry; no magic discovery).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from bayesrm.models.checkpoint import CheckpointError, read_meta

SCORER_CLASSES: dict[str, str] = {
    "reward_model": "bayesrm.models.reward_model:RewardModel",
    "head_ensemble": "bayesrm.uncertainty.heads:HeadEnsemble",
    "lora_ensemble": "bayesrm.uncertainty.lora_ensemble:LoRAEnsemble",
    "independent_ensemble": "bayesrm.uncertainty.independent:IndependentEnsemble",
    "laplace": "bayesrm.uncertainty.laplace.posterior:LaplaceLoRA",
    "laplace_ensemble": "bayesrm.uncertainty.laplace.ensemble:LaplaceEnsemble",
    "mc_dropout": "bayesrm.uncertainty.mc_dropout:MCDropout",
    "last_layer_laplace": "bayesrm.uncertainty.last_layer:LastLayerLaplace",
}


def scorer_class(kind: str) -> type:
    """The class registered for a checkpoint kind."""
    if kind not in SCORER_CLASSES:
        raise CheckpointError(f"unknown checkpoint kind {kind!r}; known: {sorted(SCORER_CLASSES)}")
    module_name, _, attr = SCORER_CLASSES[kind].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def load_scorer(directory: str | Path, device: str = "cpu") -> Any:
    """Load any saved bayesrm reward model, ensemble or posterior; it scores with ``.score(prompts, responses)``."""
    kind = read_meta(directory)["bayesrm_kind"]
    return scorer_class(kind).from_pretrained(directory, device=device)
