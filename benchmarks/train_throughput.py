"""Reward-model training throughput: bayesrm's RewardTrainer vs TRL's RewardTrainer, same run.

Same backbone (all-MiniLM-L6-v2), LoRA config (r=8, alpha=16, query/value), data (HH-RLHF
harmless pairs), max length, batch size and number of steps. Each trainer runs WARMUP steps first,
then STEPS timed steps. The two are interleaved and repeated (TRL, bayesrm, TRL, bayesrm, ...,
ROUNDS times; see interleave.py): the verdict is the median of the per-round ratios bayesrm / TRL
(target >= 1.0), printed with its range, so one burst of load on a shared machine cannot flip it.

    python benchmarks/train_throughput.py [--steps 20] [--batch-size 16] [--max-length 128] [--rounds 3]
    python benchmarks/train_throughput.py --small    # a quick check that it runs
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import torch
from transformers import TrainerCallback

os.environ.setdefault("HF_HUB_OFFLINE", "1")


class StepTimer(TrainerCallback):
    """Wall time of the steps after the first `warmup` ones."""

    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, None, None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


def load_pairs(n: int):
    from bayesrm.data.loading import embedded_hh_harmless_path, load_preferences

    pairs = [p for p in load_preferences(embedded_hh_harmless_path()).pairs if p.chosen.strip() and p.rejected.strip()]
    return pairs[:n]


def run_bayesrm(pairs, args, out: str) -> float:
    from bayesrm.data.collator import PreferenceCollator, PreferenceDataset
    from bayesrm.models import RewardModel, RewardModelConfig
    from bayesrm.training import RewardTrainer, RewardTrainingConfig

    model = RewardModel.from_config(RewardModelConfig(max_length=args.max_length, lora_r=8, lora_alpha=16,
                                                      target_modules=["query", "value"]), seed=0)
    cfg = RewardTrainingConfig(output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=args.warmup + args.steps,
                               logging_steps=1000, seed=0, use_cpu=True, disable_tqdm=True)
    timer = StepTimer(args.warmup)
    trainer = RewardTrainer(model=model, args=cfg, train_dataset=PreferenceDataset(pairs, model.encoder),
                            data_collator=PreferenceCollator(model.encoder), callbacks=[timer])
    trainer.train()
    return args.steps * args.batch_size / (timer.end - timer.start)


def run_trl(pairs, args, out: str) -> float:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from bayesrm.models.backbones import embedded_minilm_path

    path = embedded_minilm_path()
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    tok = AutoTokenizer.from_pretrained(path)
    tok.eos_token = tok.sep_token  # TRL appends an EOS token; BERT tokenizers have none
    data = Dataset.from_list([{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in pairs])
    cfg = RewardConfig(output_dir=out, per_device_train_batch_size=args.batch_size, max_steps=args.warmup + args.steps,
                       max_length=args.max_length, logging_steps=1000, seed=0, use_cpu=True, report_to="none",
                       disable_tqdm=True, save_strategy="no")
    timer = StepTimer(args.warmup)
    trainer = RewardTrainer(model=model, args=cfg, train_dataset=data, processing_class=tok, callbacks=[timer],
                            peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], task_type="SEQ_CLS"))
    trainer.train()
    return args.steps * args.batch_size / (timer.end - timer.start)


def main() -> None:
    from interleave import format_ratio, paired_ratios, run_interleaved, summarize

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved TRL / bayesrm rounds (median ratio reported).")
    parser.add_argument("--small", action="store_true", help="Tiny sizes (3 steps, batch 4, length 32, 2 rounds): checks that it runs.")
    args = parser.parse_args()
    if args.small:
        args.steps, args.warmup, args.batch_size, args.max_length, args.rounds = 3, 1, 4, 32, 2
    pairs = load_pairs((args.steps + args.warmup) * args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        rates = run_interleaved({"trl": lambda: run_trl(pairs, args, os.path.join(tmp, "trl")),
                                 "bayesrm": lambda: run_bayesrm(pairs, args, os.path.join(tmp, "bayesrm"))}, args.rounds)
    ratios = paired_ratios(rates["bayesrm"], rates["trl"])
    print(f"threads={torch.get_num_threads()} batch={args.batch_size} max_length={args.max_length} steps={args.steps} "
          f"rounds={args.rounds}")
    for name, label in (("trl", "TRL RewardTrainer"), ("bayesrm", "bayesrm")):
        r = summarize(rates[name])
        print(f"{label:18s}: {r['median']:7.2f} pairs/s median (range {r['min']:.2f}-{r['max']:.2f})")
    print(format_ratio("ratio bayesrm/TRL", ratios, "target >= 1.0", ok=lambda m: m >= 1.0))


if __name__ == "__main__":
    main()
