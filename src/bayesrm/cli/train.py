"""`bayesrm train`: train a reward model (MAP, an ensemble, WARM or MC dropout) on preference data, save it, evaluate it."""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from bayesrm.cli.common import add_data_options, data_options, load_split, save_data_options
from bayesrm.cli.options import add_config_options, add_dataclass_options, build_dataclass
from bayesrm.cli.safety import add_output_options
from bayesrm.models.reward_model import RewardModelConfig
from bayesrm.training.trainer import RewardTrainingConfig
from bayesrm.uncertainty.base import EnsembleConfig
from bayesrm.uncertainty.factory import Method
from bayesrm.uncertainty.mc_dropout import MCDropoutConfig

TRAINING_OPTIONS = [
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "weight_decay", "warmup_steps", "lr_scheduler_type", "logging_steps", "save_strategy", "save_steps",
    "save_total_limit", "seed", "center_rewards_coefficient", "ensemble_target", "use_cpu",
]
"""The TrainingArguments exposed as flags; any other field can be set in the --config file."""


@dataclass
class TrainOptions:
    """What to train and where it goes."""

    method: Method = "map"
    """map (one LoRA reward model) | heads (shared backbone, K heads) | lora-ensemble (K LoRA members, one batched pass) | two-stage (heads, then a LoRA ensemble on the tuned backbone) | independent (K separately trained models) | warm (K models from one init, data orders seed..seed+K-1, weights averaged into one) | mc-dropout (trained and scored with dropout on, --samples passes)."""
    out: str = "runs/reward_model"
    """Output directory: model/ (with the data and split options in its config.json), metrics.json, reliability.png."""
    batch_size: int = 32
    """Scoring batch size of the held-out evaluation."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="Train a reward model on preference data.", description=__doc__)
    add_config_options(p)
    add_dataclass_options(p, TrainOptions, title="method and output")
    add_dataclass_options(p, EnsembleConfig, exclude=("seed",), title="ensemble and warm (seeded by --seed)")
    add_dataclass_options(p, MCDropoutConfig, exclude=("seed",), title="MC dropout (--method mc-dropout; masks seeded by --seed)")
    add_data_options(p)
    add_dataclass_options(p, RewardModelConfig, title="reward model")
    add_dataclass_options(p, RewardTrainingConfig, only=TRAINING_OPTIONS, title="training")
    add_output_options(p, resume_help="Continue the run in OUT from its last complete checkpoint (OUT/checkpoints; "
                                      "needs --save-strategy steps or epoch), to the same weights as an uninterrupted run. "
                                      "The settings must be the run's own. (`resume_from_checkpoint: DIR` in --config: from DIR.)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bayesrm.config import identity_mapping, to_mapping
    from bayesrm.evaluation.outputs import format_metrics, write_evaluation
    from bayesrm.scenarios.stages import claim_run
    from bayesrm.uncertainty.factory import train_model

    resume = resume_request(vars(args))
    if "resume_from_checkpoint" in vars(args):
        del args.resume_from_checkpoint  # handled here: Trainer.train() would ignore it

    opts: TrainOptions = build_dataclass(TrainOptions, args)
    out = Path(opts.out)
    rm_config: RewardModelConfig = build_dataclass(RewardModelConfig, args)
    data = data_options(args)
    training = build_dataclass(RewardTrainingConfig, args, output_dir=str(out / "checkpoints"),
                               eval_strategy="epoch" if data.validation_fraction > 0 else "no")
    ensemble: EnsembleConfig = build_dataclass(EnsembleConfig, args, seed=training.seed)
    mc: MCDropoutConfig = build_dataclass(MCDropoutConfig, args, seed=training.seed)
    trained = training.identity()
    settings = {"method": opts.method, "model": identity_mapping(rm_config), "data": to_mapping(data), "training": trained,
                "ensemble": identity_mapping(ensemble), **({"mc_dropout": identity_mapping(mc)} if opts.method == "mc-dropout" else {})}
    resuming = claim_run(out, "train", settings, overwrite=getattr(args, "overwrite", False), resume=bool(resume),
                         cleanup=[out / "model", out / "checkpoints", out / "metrics.json", out / "reliability.png"])
    if resuming or isinstance(resume, str):
        print(f"resuming from {resume if isinstance(resume, str) else 'the last complete checkpoint in ' + training.output_dir}")
    splits = load_split(data)
    if not splits["validation"]:
        training = dataclasses.replace(training, eval_strategy="no")
    print(f"data: {len(splits['train'])} train / {len(splits['validation'])} validation / {len(splits['test'])} test pairs")
    start = time.perf_counter()
    model = train_model(opts.method, rm_config, splits["train"], training, members=ensemble.members,
                        diversity=ensemble.diversity, top_layers=ensemble.top_layers, seed=ensemble.seed,
                        bootstrap=ensemble.bootstrap, eval_pairs=splits["validation"] or None,
                        resume=resume if isinstance(resume, str) else resuming, mc_dropout=mc)
    seconds = time.perf_counter() - start
    model.save_pretrained(out / "model")
    save_data_options(out / "model", data)
    print(f"trained {opts.method} in {seconds:.0f} s; saved to {out / 'model'}")
    if splits["test"]:
        metrics = write_evaluation(model, splits["test"], out, opts.batch_size, f"{opts.method} on held-out pairs")
        print(f"held-out: {format_metrics(metrics)}")
    return 0


def resume_request(values: dict) -> bool | str:
    """--resume, or ``resume_from_checkpoint`` from --config (true = the last checkpoint, a string = that checkpoint)."""
    value = values.get("resume_from_checkpoint")
    if isinstance(value, str) and value.strip().lower() in {"true", "false", ""}:
        value = value.strip().lower() == "true"
    if value not in (None, False, True) and not isinstance(value, str):
        raise ValueError(f"resume_from_checkpoint must be true, false or a checkpoint directory, got {value!r}")
    if isinstance(value, str):
        return value
    return bool(values.get("resume", False) or value)
