"""`bayesrm train`: train a reward model (MAP or an ensemble) on preference data, save it, evaluate it."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from bayesrm.cli.common import add_data_options, load_split
from bayesrm.evaluation.outputs import format_metrics, write_evaluation
from bayesrm.cli.options import add_dataclass_options, build_dataclass
from bayesrm.cli.safety import add_output_options
from bayesrm.models.reward_model import RewardModelConfig
from bayesrm.scenarios.stages import claim_run
from bayesrm.training.trainer import RewardTrainingConfig
from bayesrm.uncertainty.factory import train_model

TRAINING_OPTIONS = [
    "learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size", "gradient_accumulation_steps",
    "weight_decay", "warmup_steps", "lr_scheduler_type", "logging_steps", "save_strategy", "save_steps",
    "save_total_limit", "seed", "center_rewards_coefficient", "ensemble_target", "use_cpu",
]
"""The TrainingArguments exposed as flags; any other field can be set in the --config YAML."""



@dataclass
class MethodOptions:
    """Which kind of reward model to train."""

    method: str = "map"
    """map (one LoRA reward model) | heads (shared backbone, K heads) | lora-ensemble (K LoRA members, one batched pass) | two-stage (heads, then a LoRA ensemble on the tuned backbone) | independent (K separately trained models)."""
    members: int = 5
    """Ensemble size K (ignored for map)."""
    diversity: float = 0.0
    """lambda of the nuclear-norm diversity term (lora-ensemble; UP-RLHF eq. 12)."""
    top_layers: int | None = None
    """lora-ensemble: adapt only the top L transformer blocks (the frozen bottom is computed once)."""
    bootstrap: bool = False
    """Ensembles: give each member its own Poisson(1) bootstrap resample of the pairs."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="Train a reward model on preference data.", description=__doc__)
    p.add_argument("--config", help="YAML file of option: value defaults (flags given here win).")
    p.add_argument("--out", default="runs/reward_model", help="Output directory: model/, metrics.json, reliability.png.")
    p.add_argument("--batch-size", dest="eval_batch_size", type=int, default=32, help="Batch size for evaluation scoring.")
    add_data_options(p)
    add_dataclass_options(p, MethodOptions, title="method")
    add_dataclass_options(p, RewardModelConfig, title="reward model")
    add_dataclass_options(p, RewardTrainingConfig, only=TRAINING_OPTIONS, title="training")
    add_output_options(p, resume_help="Continue the run in OUT from its last complete checkpoint (OUT/checkpoints; "
                                      "needs --save-strategy steps or epoch), to the same weights as an uninterrupted run. "
                                      "The settings must be the run's own.")
    p.set_defaults(run=run, config_holds_options=True)


def run(args: argparse.Namespace) -> int:
    values = vars(args)
    method: MethodOptions = build_dataclass(MethodOptions, values)
    out = Path(args.out)
    rm_config: RewardModelConfig = build_dataclass(RewardModelConfig, values)
    resume = resume_request(values)
    settings = train_settings(values)
    resuming = claim_run(out, "train", settings, overwrite=values.get("overwrite", False), resume=bool(resume),
                         cleanup=[out / "model", out / "checkpoints", out / "metrics.json", out / "reliability.png"])
    splits = load_split(args)
    print(f"data: {len(splits['train'])} train / {len(splits['validation'])} validation / {len(splits['test'])} test pairs")
    training = build_dataclass(
        RewardTrainingConfig,
        {k: v for k, v in values.items() if k != "resume_from_checkpoint"},
        output_dir=str(out / "checkpoints"),
        eval_strategy="epoch" if splits["validation"] else "no",
    )
    if resuming or isinstance(resume, str):
        print(f"resuming from {resume if isinstance(resume, str) else 'the last complete checkpoint in ' + training.output_dir}")
    start = time.perf_counter()
    model = train_model(method.method, rm_config, splits["train"], training, members=method.members,
                        diversity=method.diversity, top_layers=method.top_layers, seed=training.seed,
                        bootstrap=method.bootstrap, eval_pairs=splits["validation"] or None,
                        resume=resume if isinstance(resume, str) else resuming)
    seconds = time.perf_counter() - start
    model.save_pretrained(out / "model")
    print(f"trained {method.method} in {seconds:.0f} s; saved to {out / 'model'}")
    if splits["test"]:
        metrics = write_evaluation(model, splits["test"], out, args.eval_batch_size, f"{method.method} on held-out pairs")
        print(f"held-out: {format_metrics(metrics)}")
    return 0


RUN_FLAGS = {"config", "out", "eval_batch_size", "overwrite", "resume", "resume_from_checkpoint", "run", "command",
             "config_holds_options", "show_traceback"}
"""Options that do not change what is trained (left out of the run's fingerprint)."""


def train_settings(values: dict) -> dict:
    """Everything that decides the trained weights: data, method, model and training options."""
    return {k: v for k, v in sorted(values.items()) if k not in RUN_FLAGS and not callable(v)}


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
