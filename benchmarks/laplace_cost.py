"""Cost of Laplace-LoRA on the embedded MiniLM backbone, as ratios measured in one run (DESIGN.md section 6).

  predictive / MAP scoring of the same batch       target <= 2.5x
  fit (factors + prior precision) / one BT epoch   target <= 0.5x
  stored factor bytes / LoRA parameter bytes       ("about the size of the LoRA weights")

Run (heavy):  flock /tmp/bayesrm-heavy.lock .venv/bin/python benchmarks/laplace_cost.py [--pairs 64]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from bayesrm.data.collator import PreferenceCollator, PreferenceDataset
from bayesrm.data.loading import load_preferences
from bayesrm.models.reward_model import RewardModel, RewardModelConfig
from bayesrm.training.losses import bradley_terry_loss
from bayesrm.uncertainty.laplace import LaplaceLoRA

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


def timed(fn, repeats: int = 1) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def train_epoch(model: RewardModel, pairs, batch_size: int) -> None:
    loader = DataLoader(PreferenceDataset(pairs, model.encoder), batch_size=batch_size, shuffle=True, collate_fn=PreferenceCollator(model.encoder))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    model.train()
    for batch in loader:
        r = model(batch["input_ids"], batch["attention_mask"])
        loss, _ = bradley_terry_loss(r[: r.shape[0] // 2], r[r.shape[0] // 2 :])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--score-batch", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--low-rank", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="Write the results as JSON here.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    pairs = load_preferences(DATA).pairs[: args.pairs]
    model = RewardModel.from_config(RewardModelConfig(backbone="minilm", lora_r=args.lora_r, max_length=args.max_length), seed=0).eval()
    with torch.no_grad():  # a non-zero LoRA B, as after training (peft initialises B = 0)
        for layer in model.lora_modules().values():
            layer.lora_B["default"].weight.normal_(0, 0.02)

    epoch_s = timed(lambda: train_epoch(model, pairs, args.batch_size))
    la = LaplaceLoRA(model, low_rank=args.low_rank)
    fit_s = timed(lambda: (la.fit(pairs, batch_size=args.batch_size), la.optimize_prior_precision()))

    batch_pairs = pairs[: args.score_batch]
    prompts, responses = [p.prompt for p in batch_pairs], [p.chosen for p in batch_pairs]
    model.score(prompts, responses, batch_size=args.score_batch)  # warm-up
    la.score(prompts, responses, batch_size=args.score_batch)
    map_s = timed(lambda: model.score(prompts, responses, batch_size=args.score_batch), repeats=3)
    lin_s = timed(lambda: la.score(prompts, responses, batch_size=args.score_batch), repeats=3)

    lora_bytes = sum(b.module.weight.numel() * b.module.weight.element_size() for b in la.blocks_list)
    result = {
        "pairs": len(pairs), "batch_size": args.batch_size, "score_batch": args.score_batch, "max_length": args.max_length,
        "lora_r": args.lora_r, "low_rank": args.low_rank, "n_params": la.n_params, "threads": args.threads,
        "map_score_s": map_s, "laplace_score_s": lin_s, "predictive_ratio": lin_s / map_s,
        "epoch_s": epoch_s, "fit_s": fit_s, "fit_ratio": fit_s / epoch_s,
        "posterior_bytes": la.posterior_nbytes(), "lora_bytes": lora_bytes, "memory_ratio": la.posterior_nbytes() / lora_bytes,
        "prior_precision": la.prior_precision,
    }
    print(json.dumps(result, indent=2))
    print(f"predictive / MAP scoring: {result['predictive_ratio']:.2f}x (target <= 2.5x)")
    print(f"fit / one training epoch: {result['fit_ratio']:.2f}x (target <= 0.5x)")
    print(f"factor memory / LoRA memory: {result['memory_ratio']:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
