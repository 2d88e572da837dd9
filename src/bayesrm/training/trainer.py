"""Bradley-Terry reward-model training on ``transformers.Trainer``.

Because this is a plain Trainer subclass, checkpointing and ``resume_from_checkpoint``,
gradient accumulation, logging and multi-process training (DDP via ``torchrun`` /
``accelerate launch``) work unchanged. The model may be a :class:`~bayesrm.models.RewardModel`
(rewards [2B]) or an ensemble (rewards [K, 2B]); see :func:`bayesrm.training.losses.bradley_terry_loss`.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from bayesrm.data.collator import PreferenceCollator, PreferenceDataset
from bayesrm.data.schema import PreferencePair
from bayesrm.training.distributed import init_distributed_cpu
from bayesrm.training.losses import TARGETS, bradley_terry_loss
from bayesrm.training.state import load_optimizer_state, load_rng_state, save_optimizer_state, save_rng_state


@dataclass
class RewardTrainingConfig(TrainingArguments):
    """``TrainingArguments`` plus the Bradley-Terry options (defaults suited to LoRA reward models)."""

    output_dir: str = field(default="runs/reward_model", metadata={"help": "Where checkpoints and logs go."})
    learning_rate: float = field(default=2e-4, metadata={"help": "Peak learning rate (LoRA-sized)."})
    per_device_train_batch_size: int = field(default=16, metadata={"help": "Preference pairs per device per step."})
    per_device_eval_batch_size: int = field(default=32, metadata={"help": "Pairs per device per eval step."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the training pairs."})
    logging_steps: float = field(default=10, metadata={"help": "Log loss / accuracy / margin every N steps."})
    save_strategy: str = field(default="no", metadata={"help": "'steps' or 'epoch' to keep resumable checkpoints."})
    report_to: Any = field(default="none", metadata={"help": "Experiment trackers (none by default)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Kept False: batches are built by our collator."})
    center_rewards_coefficient: float = field(
        default=0.0, metadata={"help": "Weight c of the reward-centering term c * mean((r_w + r_l)^2)."}
    )
    ensemble_target: str = field(
        default="members", metadata={"help": "Ensembles: 'members' (each member's BT loss) or 'mean' (UP-RLHF eq. 12)."}
    )
    use_margin: bool = field(default=True, metadata={"help": "Subtract the pairs' margins (when the data has them)."})

    def identity(self) -> dict[str, Any]:
        """The settings that decide what training produces, for stage and run fingerprints: every field
        this class declares (its defaults are bayesrm's, so changing one must make earlier runs stale),
        plus each inherited ``TrainingArguments`` field that differs from transformers' default. Where
        output goes (output_dir, logging_dir, disable_tqdm) is left out."""
        from bayesrm.config import to_mapping

        own = {name for name in vars(RewardTrainingConfig).get("__annotations__", {})}
        hf = {f.name: f.default for f in dataclasses.fields(TrainingArguments) if f.default is not dataclasses.MISSING}
        out = {}
        for name, value in to_mapping(self).items():
            if name in ("output_dir", "logging_dir", "disable_tqdm"):
                continue
            if name in own or name not in hf or to_mapping(hf[name]) != value:
                out[name] = value
        return out

    def __post_init__(self) -> None:
        if self.ensemble_target not in TARGETS:
            raise ValueError(f"ensemble_target must be one of {TARGETS}, got {self.ensemble_target!r}")
        if self.use_cpu or not torch.cuda.is_available():
            init_distributed_cpu()  # must precede TrainingArguments' device setup (see training/distributed.py)
        super().__post_init__()


LOG_NAME = "train_log.jsonl"
"""Every log record of a run (loss, accuracy, margin, eval metrics, ...), one JSON object a line, in output_dir."""
POSTFIX = ("loss", "accuracy", "eval_loss", "eval_accuracy")


def cut_log(path: Path, step: int) -> None:
    """On (re)start at ``step``: drop records of later steps (they are redone) and a torn last line, atomically."""
    if not path.is_file():
        return
    text = path.read_text(encoding="utf-8", errors="replace")
    lines = text.split("\n")[:-1]  # the part after the last newline is empty or a torn write
    kept = []
    for line in lines:
        try:
            if json.loads(line).get("step", 0) <= step:
                kept.append(line + "\n")
        except (ValueError, AttributeError):
            continue
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(kept), encoding="utf-8")
    os.replace(tmp, path)


class QuietProgress(TrainerCallback):
    """One progress bar with loss and accuracy in its postfix; the full log records go to OUTPUT_DIR/train_log.jsonl.

    Replaces transformers' ProgressCallback (nested bars, raw dicts between them) and PrinterCallback.
    """

    def __init__(self) -> None:
        self.bar: Any = None
        self.shown: dict[str, str] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            cut_log(Path(args.output_dir) / LOG_NAME, state.global_step)
        if state.is_world_process_zero and not args.disable_tqdm:
            self.bar = tqdm(total=state.max_steps, desc="training", unit="step", dynamic_ncols=True, leave=False)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        path = Path(args.output_dir) / LOG_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as f:
            f.write(json.dumps({"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float, str))}}) + "\n")
        if self.bar is not None:
            self.shown.update({k: f"{logs[k]:.3g}" for k in POSTFIX if isinstance(logs.get(k), (int, float))})
            self.bar.set_postfix(self.shown, refresh=True)

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class RewardTrainer(Trainer):
    """Trains any model whose forward maps (input_ids [2B,T], attention_mask [2B,T]) to rewards [2B] or [K, 2B].

    Optional model hooks: ``extra_loss() -> (tensor, stats)`` is added to the loss (e.g. the
    diversity term), ``member_weights(pair_index [B]) -> [K, B]`` gives per-member pair weights.
    Logs loss, accuracy, margin and reward mean (and per-member accuracy for ensembles).
    """

    args: RewardTrainingConfig

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.remove_callback(ProgressCallback)
        self.remove_callback(PrinterCallback)
        self.add_callback(QuietProgress())
        self._stats: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}

    def compute_loss(self, model: nn.Module, inputs: dict[str, torch.Tensor], return_outputs: bool = False, num_items_in_batch: Any = None):
        rewards = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"])  # [2B] or [K, 2B]
        n_pairs = inputs["input_ids"].shape[0] // 2
        r_chosen, r_rejected = rewards[..., :n_pairs], rewards[..., n_pairs:]  # each [B] or [K, B]
        core = self.accelerator.unwrap_model(model)
        weights = None
        if rewards.ndim == 2 and hasattr(core, "member_weights") and "pair_index" in inputs:
            weights = core.member_weights(inputs["pair_index"])
        margin = inputs.get("margin") if self.args.use_margin else None
        loss, stats = bradley_terry_loss(
            r_chosen, r_rejected, margin, self.args.center_rewards_coefficient, self.args.ensemble_target, weights
        )
        if model.training and hasattr(core, "extra_loss"):
            extra, extra_stats = core.extra_loss()
            loss = loss + extra
            stats.update(extra_stats)
            stats["loss"] = float(loss.detach())
        split = "train" if model.training else "eval"
        for name, value in stats.items():
            self._stats[split][name].append(value)
        return (loss, {"rewards": rewards}) if return_outputs else loss

    def prediction_step(self, model: nn.Module, inputs: dict[str, torch.Tensor], prediction_loss_only: bool, ignore_keys=None):
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        split = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        prefix = "eval_" if split == "eval" else ""
        for name, values in self._stats[split].items():
            if name != "loss" and values:
                logs[prefix + name] = sum(values) / len(values)
        self._stats[split].clear()
        super().log(logs, start_time)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model: nn.Module | None = None) -> None:
        """Resume: read back what :meth:`_save` wrote (safetensors, checked against the model)."""
        from bayesrm.models.checkpoint import CheckpointError, load_checkpoint

        core = self.accelerator.unwrap_model(model if model is not None else self.model)
        _, tensors = load_checkpoint(resume_from_checkpoint, getattr(core, "KIND", None))
        result = core.load_state_dict(tensors, strict=False)
        if result.unexpected_keys:
            raise CheckpointError(f"{resume_from_checkpoint}: weights the model does not have: {result.unexpected_keys[:3]}")

    # ---- resumable state in safetensors + JSON (Trainer's own uses torch.save / torch.load) -------
    def _plain(self) -> bool:
        return not (self.is_deepspeed_enabled or self.is_fsdp_enabled)

    def _rank(self) -> int | None:
        return self.args.process_index if self.args.world_size > 1 else None

    def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
        if not self._plain():
            return super()._save_optimizer_and_scheduler(output_dir)
        if self.args.should_save:
            save_optimizer_state(output_dir, self.optimizer, self.lr_scheduler)

    def _load_optimizer_and_scheduler(self, checkpoint: str | None) -> None:
        if checkpoint is None or not self._plain():
            return super()._load_optimizer_and_scheduler(checkpoint)
        load_optimizer_state(checkpoint, self.optimizer, self.lr_scheduler)

    def _save_rng_state(self, output_dir: str) -> None:
        save_rng_state(output_dir, self._rank())

    def _load_rng_state(self, checkpoint: str | None) -> None:
        if checkpoint is not None:
            load_rng_state(checkpoint, self._rank())

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Save in bayesrm's own format (config.json + model.safetensors of the trained weights)."""
        if not self.args.should_save:
            return
        self.accelerator.unwrap_model(self.model).save_pretrained(output_dir or self.args.output_dir)


def train_reward_model(
    model: nn.Module,
    train_pairs: Sequence[PreferencePair],
    config: RewardTrainingConfig,
    eval_pairs: Sequence[PreferencePair] | None = None,
    resume_from_checkpoint: str | bool | None = None,
) -> RewardTrainer:
    """Tokenize the pairs with the model's own encoder, train, and return the trainer (model trained in place;
    under ``bf16`` / ``fp16`` only training runs in autocast, the returned model's forward is the plain one)."""
    if not train_pairs:
        raise ValueError("no training pairs")
    encoder = model.encoder
    trainer = RewardTrainer(
        model=model,
        args=config,
        train_dataset=PreferenceDataset(train_pairs, encoder),
        eval_dataset=PreferenceDataset(eval_pairs, encoder) if eval_pairs else None,
        data_collator=PreferenceCollator(encoder),
    )
    try:
        trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    finally:
        # bf16 / fp16: accelerate wrapped model.forward in autocast for training (and left it there); what
        # scores the model afterwards must get its own precision, so the plain forward is put back
        trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
        release_ddp(trainer)
    return trainer


def release_ddp(trainer: Trainer) -> None:
    """Free the DistributedDataParallel wrapper (and its Reducer) now, while the process group is alive.

    Left to interpreter teardown (a trainer kept in a script's global, say), freeing DDP's Reducer can
    deadlock in torch: the gloo destructor joins a worker thread that waits for the GIL. The trained
    model itself (``trainer.model``) is kept."""
    from torch.nn.parallel import DistributedDataParallel

    if isinstance(trainer.model_wrapped, DistributedDataParallel):
        trainer.model_wrapped = trainer.model
        trainer.accelerator.free_memory()  # accelerate's own references to the wrapper
