"""Cost of Laplace-LoRA on the embedded MiniLM backbone, as ratios measured in one run (DESIGN.md section 6).

  predictive / MAP scoring of the same batch       target <= 2.5x
  fit (factors + prior precision) / one BT epoch   target <= 0.5x
  stored factor bytes / LoRA parameter bytes       ("about the size of the LoRA weights")

The timed parts are interleaved and repeated (epoch, fit, MAP scoring, Laplace scoring, then again,
ROUNDS times; see interleave.py); each ratio is taken per round and reported as the median with its
range, so a burst of load from another job cannot flip a verdict.

Run (heavy):  flock /tmp/bayesrm-heavy.lock .venv/bin/python benchmarks/laplace_cost.py [--pairs 64] [--rounds 3]
Quick check:  .venv/bin/python benchmarks/laplace_cost.py --small
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from bayesrm.data.collator import PreferenceCollator, PreferenceDataset
from bayesrm.data.loading import load_preferences
from bayesrm.models.reward_model import RewardModel, RewardModelConfig
from bayesrm.training.losses import bradley_terry_loss
from bayesrm.uncertainty.laplace import LaplaceLoRA
from interleave import format_ratio, paired_ratios, run_interleaved, seconds_of

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "hh-rlhf-harmless-base-test.jsonl.gz"


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
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds (median ratios reported).")
    parser.add_argument("--small", action="store_true", help="Tiny sizes (8 pairs, length 32, 2 rounds): checks that it runs.")
    parser.add_argument("--out", default=None, help="Write the results as JSON here.")
    args = parser.parse_args()
    if args.small:
        args.pairs, args.batch_size, args.score_batch, args.max_length, args.rounds = 8, 4, 8, 32, 2
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    pairs = load_preferences(DATA).pairs[: args.pairs]
    model = RewardModel.from_config(RewardModelConfig(backbone="minilm", lora_r=args.lora_r, max_length=args.max_length), seed=0).eval()
    with torch.no_grad():  # a non-zero LoRA B, as after training (peft initialises B = 0)
        for layer in model.lora_modules().values():
            layer.lora_B["default"].weight.normal_(0, 0.02)

    batch_pairs = pairs[: args.score_batch]
    prompts, responses = [p.prompt for p in batch_pairs], [p.chosen for p in batch_pairs]
    state: dict[str, LaplaceLoRA] = {}

    def fit() -> None:  # a fresh posterior at the current weights, as after training
        state["la"] = LaplaceLoRA(model, low_rank=args.low_rank)
        state["la"].fit(pairs, batch_size=args.batch_size)
        state["la"].optimize_prior_precision()

    fit()
    model.score(prompts, responses, batch_size=args.score_batch)  # warm-up
    state["la"].score(prompts, responses, batch_size=args.score_batch)
    times = run_interleaved({
        "epoch": seconds_of(lambda: train_epoch(model, pairs, args.batch_size)),
        "fit": seconds_of(fit),
        "map_score": seconds_of(lambda: model.score(prompts, responses, batch_size=args.score_batch)),
        "laplace_score": seconds_of(lambda: state["la"].score(prompts, responses, batch_size=args.score_batch)),
    }, args.rounds)
    predictive, fit_ratio = paired_ratios(times["laplace_score"], times["map_score"]), paired_ratios(times["fit"], times["epoch"])
    la = state["la"]
    map_s, lin_s = statistics.median(times["map_score"]), statistics.median(times["laplace_score"])
    epoch_s, fit_s = statistics.median(times["epoch"]), statistics.median(times["fit"])

    lora_bytes = sum(b.module.weight.numel() * b.module.weight.element_size() for b in la.blocks_list)
    result = {
        "pairs": len(pairs), "batch_size": args.batch_size, "score_batch": args.score_batch, "max_length": args.max_length,
        "lora_r": args.lora_r, "low_rank": args.low_rank, "n_params": la.n_params, "threads": args.threads,
        "rounds": args.rounds, "times": times,
        "map_score_s": map_s, "laplace_score_s": lin_s, "predictive_ratio": statistics.median(predictive),
        "predictive_ratio_rounds": predictive,
        "epoch_s": epoch_s, "fit_s": fit_s, "fit_ratio": statistics.median(fit_ratio), "fit_ratio_rounds": fit_ratio,
        "posterior_bytes": la.posterior_nbytes(), "lora_bytes": lora_bytes, "memory_ratio": la.posterior_nbytes() / lora_bytes,
        "prior_precision": la.prior_precision,
    }
    print(json.dumps(result, indent=2))
    print(format_ratio("predictive / MAP scoring", predictive, "target <= 2.5x", ok=lambda m: m <= 2.5))
    print(format_ratio("fit / one training epoch", fit_ratio, "target <= 0.5x", ok=lambda m: m <= 0.5))
    print(f"factor memory / LoRA memory: {result['memory_ratio']:.2f}x")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
