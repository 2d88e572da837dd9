"""`bayesrm train`: train a reward model (MAP or an ensemble) on preference data, save it, evaluate it."""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from bayesrm.cli.common import add_data_options, data_options, load_split, save_data_options
from bayesrm.cli.options import add_config_options, add_dataclass_options, build_dataclass
from bayesrm.models.reward_model import RewardModelConfig
from bayesrm.training.trainer import RewardTrainingConfig
from bayesrm.uncertainty.base import EnsembleConfig
from bayesrm.uncertainty.factory import Method

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
    """map (one LoRA reward model) | heads (shared backbone, K heads) | lora-ensemble (K LoRA members, one batched pass) | two-stage (heads, then a LoRA ensemble on the tuned backbone) | independent (K separately trained models)."""
    out: str = "runs/reward_model"
    """Output directory: model/ (with the data and split options in its config.json), metrics.json, reliability.png."""
    batch_size: int = 32
    """Scoring batch size of the held-out evaluation."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="Train a reward model on preference data.", description=__doc__)
    add_config_options(p)
    add_dataclass_options(p, TrainOptions, title="method and output")
    add_dataclass_options(p, EnsembleConfig, exclude=("seed",), title="ensemble (seeded by --seed)")
    add_data_options(p)
    add_dataclass_options(p, RewardModelConfig, title="reward model")
    add_dataclass_options(p, RewardTrainingConfig, only=TRAINING_OPTIONS, title="training")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bayesrm.evaluation.outputs import format_metrics, write_evaluation
    from bayesrm.uncertainty.factory import train_model

    opts: TrainOptions = build_dataclass(TrainOptions, args)
    out = Path(opts.out)
    rm_config: RewardModelConfig = build_dataclass(RewardModelConfig, args)
    data = data_options(args)
    training = build_dataclass(RewardTrainingConfig, args, output_dir=str(out / "checkpoints"),
                               eval_strategy="epoch" if data.validation_fraction > 0 else "no")
    ensemble: EnsembleConfig = build_dataclass(EnsembleConfig, args, seed=training.seed)
    splits = load_split(data)
    if not splits["validation"]:
        training = dataclasses.replace(training, eval_strategy="no")
    print(f"data: {len(splits['train'])} train / {len(splits['validation'])} validation / {len(splits['test'])} test pairs")
    start = time.perf_counter()
    model = train_model(opts.method, rm_config, splits["train"], training, members=ensemble.members,
                        diversity=ensemble.diversity, top_layers=ensemble.top_layers, seed=ensemble.seed,
                        bootstrap=ensemble.bootstrap, eval_pairs=splits["validation"] or None)
    seconds = time.perf_counter() - start
    model.save_pretrained(out / "model")
    save_data_options(out / "model", data)
    print(f"trained {opts.method} in {seconds:.0f} s; saved to {out / 'model'}")
    if splits["test"]:
        metrics = write_evaluation(model, splits["test"], out, opts.batch_size, f"{opts.method} on held-out pairs")
        print(f"held-out: {format_metrics(metrics)}")
    return 0
