"""Build and train any reward model kind by name: MAP, ensembles, two-stage, WARM, MC dropout.

| method          | model                                   | training                                     |
|-----------------|-----------------------------------------|----------------------------------------------|
| map             | RewardModel (LoRA)                      | one trainer run                              |
| heads           | HeadEnsemble (frozen / shared LoRA)     | one run, K heads at once                     |
| lora-ensemble   | LoRAEnsemble (K LoRAs, one pass)        | one run; optional diversity, top layers      |
| independent     | IndependentEnsemble (K RewardModels)    | K runs, trainer seeds seed..seed+K-1         |
| two-stage       | LoRAEnsemble on a merged shared LoRA    | heads + shared LoRA, merge, then K LoRAs     |
| warm            | RewardModel: K members' weights averaged | K runs from one init, data seeds seed..seed+K-1 |
| mc-dropout      | MCDropout around a RewardModel          | one run with every dropout at the MC rate    |

WARM members share their initialisation (LoRA and head drawn from ``seed``) and differ in data order
(and bootstrap replicate, if on), as in Ramé et al.: weight averaging needs a shared starting point.
MC dropout trains with the backbone's dropout on (``disable_dropout`` is overridden) at the rate it
scores with.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal, Sequence, get_args

from torch import nn

from bayesrm.data.schema import PreferencePair
from bayesrm.models.reward_model import RewardModel, RewardModelConfig
from bayesrm.training.state import last_complete_checkpoint
from bayesrm.training.trainer import RewardTrainingConfig, train_reward_model
from bayesrm.uncertainty.base import EnsembleConfig
from bayesrm.uncertainty.heads import HeadEnsemble
from bayesrm.uncertainty.independent import IndependentEnsemble
from bayesrm.uncertainty.lora_ensemble import LoRAEnsemble
from bayesrm.uncertainty.mc_dropout import MCDropout, MCDropoutConfig, set_dropout
from bayesrm.uncertainty.warm import average_reward_models

Method = Literal["map", "heads", "lora-ensemble", "independent", "two-stage", "warm", "mc-dropout"]
"""The training methods, named once (the table above); configs and CLI flags take their choices from here."""
METHODS: tuple[str, ...] = get_args(Method)
_LORA_ONLY = ("lora-ensemble", "two-stage")


def _check(method: str, diversity: float, top_layers: int | None) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if diversity and method not in _LORA_ONLY:
        raise ValueError(f"diversity applies to LoRA ensembles only, not {method!r}")
    if top_layers is not None and method not in _LORA_ONLY:
        raise ValueError(f"top_layers applies to LoRA ensembles only, not {method!r}")


def build_model(
    method: str,
    rm_config: RewardModelConfig,
    members: int = 5,
    diversity: float = 0.0,
    top_layers: int | None = None,
    seed: int = 0,
    bootstrap: bool = False,
    mc_dropout: MCDropoutConfig | None = None,
) -> nn.Module:
    """A fresh (untrained) model of the given kind. ``two-stage`` and ``warm`` need training: use :func:`train_model`."""
    _check(method, diversity, top_layers)
    ensemble = EnsembleConfig(members=members, top_layers=top_layers, diversity=diversity, bootstrap=bootstrap, seed=seed)
    if method == "map":
        return RewardModel.from_config(rm_config, seed=seed)
    if method == "mc-dropout":
        mc = mc_dropout or MCDropoutConfig()
        model = RewardModel.from_config(dataclasses.replace(rm_config, disable_dropout=False), seed=seed)
        set_dropout(model, mc.dropout)  # train at the rate the passes use
        return MCDropout(model, samples=mc.samples, dropout=mc.dropout, seed=mc.seed)
    if method == "heads":
        return HeadEnsemble.from_config(rm_config, ensemble)
    if method == "lora-ensemble":
        return LoRAEnsemble.from_config(rm_config, ensemble)
    if method == "independent":
        return IndependentEnsemble.from_config(rm_config, ensemble)
    raise ValueError(f"a {method} model is built by training it: train_model({method!r}, ...)")


def _derive(config: RewardTrainingConfig, subdir: str, seed_offset: int = 0) -> RewardTrainingConfig:
    """The training config for one sub-run: its own output directory and seed."""
    return dataclasses.replace(config, output_dir=str(Path(config.output_dir) / subdir), seed=config.seed + seed_offset)


def train_model(
    method: str,
    rm_config: RewardModelConfig,
    train_pairs: Sequence[PreferencePair],
    training_config: RewardTrainingConfig,
    members: int = 5,
    diversity: float = 0.0,
    top_layers: int | None = None,
    seed: int = 0,
    bootstrap: bool = False,
    eval_pairs: Sequence[PreferencePair] | None = None,
    resume: bool | str = False,
    mc_dropout: MCDropoutConfig | None = None,
) -> nn.Module:
    """Build and train a model of the given kind; returns the trained model (not saved).

    ``resume=True`` continues every sub-run (ensemble member, training stage) from the last complete
    checkpoint under its output directory (none: from the start), to the same weights as an
    uninterrupted run; a path resumes a single-run method from that checkpoint.
    """
    _check(method, diversity, top_layers)
    if isinstance(resume, str) and method in ("two-stage", "independent", "warm"):
        raise ValueError(f"resume_from_checkpoint names one checkpoint, but method {method!r} trains several runs: resume with --resume")
    if method == "two-stage":
        ensemble = EnsembleConfig(members=members, top_layers=top_layers, diversity=diversity, bootstrap=bootstrap, seed=seed)
        return two_stage_lora_ensemble(rm_config, train_pairs, training_config, ensemble, eval_pairs, bool(resume))
    if method == "warm":  # K members of one initialisation, trained like an independent ensemble, then averaged
        ensemble = EnsembleConfig(members=members, bootstrap=bootstrap, seed=seed)
        model = IndependentEnsemble([RewardModel.from_config(rm_config, seed=seed) for _ in range(members)], ensemble)
    else:
        model = build_model(method, rm_config, members, diversity, top_layers, seed, bootstrap, mc_dropout)
    if isinstance(model, IndependentEnsemble):
        replicates = model.bootstrap_replicates(train_pairs)  # member k's pairs, or None
        for k, member in enumerate(model.models):
            pairs = replicates[k] if replicates is not None else train_pairs
            member_config = _derive(training_config, f"member_{k}", k)
            train_reward_model(member, pairs, member_config, eval_pairs, _resume_point(member_config, resume))
        return average_reward_models(list(model.models)) if method == "warm" else model
    trained = model.model if isinstance(model, MCDropout) else model
    train_reward_model(trained, train_pairs, training_config, eval_pairs, _resume_point(training_config, resume))
    return model


def _resume_point(config: RewardTrainingConfig, resume: bool | str) -> str | None:
    """The checkpoint a (sub-)run continues from: a given path, the last complete one, or None."""
    if isinstance(resume, str):
        return resume
    return last_complete_checkpoint(config.output_dir) if resume else None


def two_stage_lora_ensemble(
    rm_config: RewardModelConfig,
    train_pairs: Sequence[PreferencePair],
    training_config: RewardTrainingConfig,
    ensemble: EnsembleConfig,
    eval_pairs: Sequence[PreferencePair] | None = None,
    resume: bool = False,
) -> LoRAEnsemble:
    """Two-stage LoRA ensemble (Zhang et al. 2024, efficient reward-model ensembles).

    Stage 1 fine-tunes the backbone with a shared LoRA under a K-head ensemble; that LoRA is merged
    into the backbone (W <- W + (alpha/r) B A). Stage 2 trains K LoRA members (heads initialised
    from stage 1's) on the merged backbone. The stage-1 LoRA is saved with the ensemble.
    """
    stage1 = HeadEnsemble.from_config(rm_config, dataclasses.replace(ensemble, top_layers=None, diversity=0.0))
    config1, config2 = _derive(training_config, "stage1"), _derive(training_config, "stage2")
    train_reward_model(stage1, train_pairs, config1, eval_pairs, _resume_point(config1, resume))
    model = LoRAEnsemble.from_config(rm_config, ensemble, base_lora=stage1.shared_lora())
    model.heads.load_state_dict(stage1.heads.state_dict())
    del stage1
    train_reward_model(model, train_pairs, config2, eval_pairs, _resume_point(config2, resume))
    return model
