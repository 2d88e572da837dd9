"""`bayesrm train`: train a reward model (MAP or an ensemble) on preference data, save it, evaluate it."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from bayesrm.cli.common import add_data_options, load_split
from bayesrm.evaluation.outputs import format_metrics, write_evaluation
from bayesrm.cli.options import add_dataclass_options, build_dataclass
from bayesrm.models.reward_model import RewardModelConfig
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
    p.set_defaults(run=run, config_holds_options=True)


def run(args: argparse.Namespace) -> int:
    values = vars(args)
    method: MethodOptions = build_dataclass(MethodOptions, values)
    out = Path(args.out)
    rm_config: RewardModelConfig = build_dataclass(RewardModelConfig, values)
    splits = load_split(args)
    print(f"data: {len(splits['train'])} train / {len(splits['validation'])} validation / {len(splits['test'])} test pairs")
    training = build_dataclass(
        RewardTrainingConfig,
        values,
        output_dir=str(out / "checkpoints"),
        eval_strategy="epoch" if splits["validation"] else "no",
    )
    start = time.perf_counter()
    model = train_model(method.method, rm_config, splits["train"], training, members=method.members,
                        diversity=method.diversity, top_layers=method.top_layers, seed=training.seed,
                        bootstrap=method.bootstrap, eval_pairs=splits["validation"] or None)
    seconds = time.perf_counter() - start
    model.save_pretrained(out / "model")
    print(f"trained {method.method} in {seconds:.0f} s; saved to {out / 'model'}")
    if splits["test"]:
        metrics = write_evaluation(model, splits["test"], out, args.eval_batch_size, f"{method.method} on held-out pairs")
        print(f"held-out: {format_metrics(metrics)}")
    return 0

