"""An explicit registry of everything bayesrm saves: checkpoint kind -> class.

``load_scorer(dir)`` reads ``config.json``'s ``bayesrm_kind`` and calls that class's
``from_pretrained``. Classes are named as import strings so that loading one kind never imports
the others (PEFT-style explicit registry; no magic discovery).

What a checkpoint may make the loader do is decided here, by the caller, never by the files:
``trust_remote_code`` (off: a backbone needing custom Python code fails to load instead of
running it) and ``allow_external_paths`` (off: every path the checkpoint names must stay
inside its directory).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from bayesrm.models.checkpoint import CONFIG_NAME, CheckpointError, read_meta

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


def scorer_class(kind: str, where: str = "checkpoint") -> type:
    """The class registered for a checkpoint kind."""
    if not isinstance(kind, str) or kind not in SCORER_CLASSES:
        raise CheckpointError(f"{where}: unknown checkpoint kind {kind!r}; known: {sorted(SCORER_CLASSES)}")
    module_name, _, attr = SCORER_CLASSES[kind].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def load_scorer(
    directory: str | Path, device: str = "cpu", *, trust_remote_code: bool = False, allow_external_paths: bool = False
) -> Any:
    """Load any saved bayesrm reward model, ensemble or posterior; it scores with ``.score(prompts, responses)``."""
    kind = read_meta(directory, allow_external_paths)["bayesrm_kind"]
    cls = scorer_class(kind, str(Path(directory) / CONFIG_NAME))
    return cls.from_pretrained(directory, device=device, trust_remote_code=trust_remote_code,
                               allow_external_paths=allow_external_paths)
