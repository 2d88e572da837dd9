"""Reproduce the embedded `helpful` gold reward model (`gold: rm:helpful`) from its seed.

Bradley-Terry on real human / GPT-4 preferences from ../shared/data (UltraFeedback 1k train,
PandaLM human pairs, HH-RLHF harmless-base, MT-Bench human pairs), on the embedded SmolLM2-135M
backbone (decoder, last-token pooling) with LoRA on every linear layer, bf16 autocast on CPU.
UltraFeedback's 200-pair test file is held out and only evaluated.

    PYTHONPATH=src python scripts/train_gold_rm.py --data ../shared/data --out runs/gold-rm [--install]

--install copies the trained adapter + head into src/bayesrm/data/assets/gold_helpful/ together
with its held-out metrics and reference scores (the asset test compares against those).
About 25 minutes on 2 shared CPU cores with the defaults; resumable (checkpoints every 25 steps).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import torch

from bayesrm.data.loading import load_preferences
from bayesrm.models.reward_model import RewardModel, RewardModelConfig
from bayesrm.training.trainer import RewardTrainingConfig, train_reward_model

ASSET = Path(__file__).resolve().parents[1] / "src" / "bayesrm" / "data" / "assets" / "gold_helpful"
SOURCES = {  # file -> pairs drawn (seeded) for training
    "ultrafeedback-binarized-1k-train.jsonl": 300,
    "pandalm-test-human.jsonl": 150,
    "hh-rlhf-harmless-base-test.jsonl.gz": 90,
    "mtbench-human-pairs.jsonl": 60,
}
TEST = "ultrafeedback-binarized-200-test.jsonl"
REFERENCE_TEXTS = [  # fixed (prompt, response) pairs whose scores the asset test reproduces
    ("How do I boil an egg?", "Place the egg in boiling water for about 9 minutes, then cool it in cold water and peel it."),
    ("How do I boil an egg?", "I don't know."),
    ("Write a haiku about autumn.", "Crisp leaves drift and fall,\ngolden light on quiet paths,\nthe year exhales slow."),
    ("What is the capital of France?", "The capital of France is Paris."),
    ("What is the capital of France?", "Bananas are yellow and grow in bunches."),
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="../shared/data")
    ap.add_argument("--out", default="runs/gold-rm")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every source's pair count (e.g. 0.1 for a smoke run)")
    ap.add_argument("--max-length", type=int, default=160)
    ap.add_argument("--lora-r", type=int, default=4)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--backbone", default="smollm2")
    ap.add_argument("--test-limit", type=int, default=None, help="evaluate on the first N test pairs only (smoke runs)")
    ap.add_argument("--evaluate-only", action="store_true", help="skip training: evaluate OUT/model (and --install it)")
    ap.add_argument("--install", action="store_true", help="copy the result into the package's assets")
    args = ap.parse_args(argv)
    data, out = Path(args.data), Path(args.out)
    rng = random.Random(args.seed)
    train = []
    for name, count in SOURCES.items():
        pairs = list(load_preferences(data / name, skip_invalid=True).pairs)
        take = min(len(pairs), max(1, int(round(count * args.scale))))
        train += rng.sample(pairs, take)
        print(f"{name}: {take} of {len(pairs)} pairs", flush=True)
    rng.shuffle(train)
    test = list(load_preferences(data / TEST, skip_invalid=True).pairs)[: args.test_limit]
    config = RewardModelConfig(backbone=args.backbone, pooling="last", max_length=args.max_length, lora_r=args.lora_r,
                               lora_alpha=2.0 * args.lora_r, target_modules="all-linear")
    model = RewardModel.from_config(config, seed=args.seed)
    ckpt = out / "checkpoints"
    training = RewardTrainingConfig(
        output_dir=str(ckpt), seed=args.seed, learning_rate=args.lr, num_train_epochs=args.epochs,
        per_device_train_batch_size=args.batch_size, warmup_steps=10, lr_scheduler_type="linear", logging_steps=5,
        bf16=True, use_cpu=True, save_strategy="steps", save_steps=25, save_total_limit=1, disable_tqdm=True,
    )
    resume = any(ckpt.glob("checkpoint-*")) if ckpt.is_dir() else False
    start = time.perf_counter()
    if not args.evaluate_only:
        train_reward_model(model, train, training, resume_from_checkpoint=resume or None)
        model.save_pretrained(out / "model")
    train_s = time.perf_counter() - start
    if args.evaluate_only and (out / "gold_info.json").exists():  # keep the training run's time
        train_s = json.loads((out / "gold_info.json").read_text()).get("train_seconds") or train_s
    # Evaluate the saved checkpoint as users load it (fp32, a fresh process state): the Trainer leaves
    # the trained module's forward wrapped in its bf16 autocast.
    model = RewardModel.from_pretrained(out / "model").eval()
    from bayesrm.evaluation.evaluate import evaluate_preferences

    start = time.perf_counter()
    result = evaluate_preferences(model, test, batch_size=32)
    eval_s = time.perf_counter() - start
    metrics = {k: float(v) for k, v in result.metrics.items()}
    ref = model.score([p for p, _ in REFERENCE_TEXTS], [r for _, r in REFERENCE_TEXTS], batch_size=8).mean.tolist()
    info = {"seed": args.seed, "train_pairs": len(train), "sources": {k: int(round(v * args.scale)) for k, v in SOURCES.items()},
            "test": TEST, "test_metrics": metrics, "train_seconds": round(train_s, 1), "eval_seconds": round(eval_s, 1),
            "command": "python scripts/train_gold_rm.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "reference": [{"prompt": p, "response": r, "score": s} for (p, r), s in zip(REFERENCE_TEXTS, ref)]}
    (out / "gold_info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps({k: info[k] for k in ("train_pairs", "test_metrics", "train_seconds", "eval_seconds")}, indent=1))
    if args.install:
        ASSET.mkdir(parents=True, exist_ok=True)
        for f in ("config.json", "model.safetensors"):
            shutil.copy2(out / "model" / f, ASSET / f)
        shutil.copy2(out / "gold_info.json", ASSET / "gold_info.json")
        print(f"installed into {ASSET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
