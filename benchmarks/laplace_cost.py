"""Cost of Laplace-LoRA, as ratios measured in one run (DESIGN.md section 6; issue 14).

Case ``minilm`` (the embedded MiniLM backbone, real HH-RLHF pairs):
  predictive / MAP scoring of the same batch       target <= 2.5x
  fit (factors + prior precision) / one BT epoch   target <= 0.5x (with --subsample; also reported at 1)
  stored factor bytes / LoRA parameter bytes       ("about the size of the LoRA weights")
  subsample accuracy: curvature, log det and held-out margin variance vs the full fit, by fraction

Case ``llama7b`` (benchmarks/laplace_llama.py: random Llama-7B-shaped blocks, d = 4096, q/v LoRA):
  extra peak fit memory over a training pass, per block, extrapolated to 32 blocks, / LoRA bytes   target <= 4x
  fit with subsampling / one BT epoch                                                              target <= 0.5x

The timed parts are interleaved and repeated (epoch, fit, MAP scoring, Laplace scoring, then again,
ROUNDS times; see interleave.py); each ratio is taken per round and reported as the median with its
range, so a burst of load from another job cannot flip a verdict.

Run (heavy):  flock /tmp/bayesrm-heavy.lock .venv/bin/python benchmarks/laplace_cost.py [--case minilm|llama7b|all] [--rounds 3]
Quick check:  .venv/bin/python benchmarks/laplace_cost.py --small   (both cases, scaled down, seconds)
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


def subsample_accuracy(model: RewardModel, pairs, held_out, fractions, seeds: int, batch_size: int, low_rank: int) -> dict:
    """Subsampled fits vs the full fit on the same pairs: relative error of the curvature (Frobenius,
    over all blocks), of log det(H + lambda I) and of held-out margin variances at the full fit's
    evidence-optimal lambda; mean over seeds."""
    from bayesrm.uncertainty.laplace.evidence import logdet_posterior_precision

    full = LaplaceLoRA(model, low_rank=low_rank).fit(pairs, batch_size=batch_size)
    lam = full.optimize_prior_precision()
    prompts, chosen, rejected = [p.prompt for p in held_out], [p.chosen for p in held_out], [p.rejected for p in held_out]
    var_full = full.score_pairs(prompts, chosen, rejected).var.double()
    logdet_full = logdet_posterior_precision(list(full.curvature.values()), lam)
    dense_full = {n: c.dense().double() for n, c in full.curvature.items()}
    sq_full = sum(float((h * h).sum()) for h in dense_full.values())
    out = {"prior_precision": lam, "fractions": {}}
    for frac in fractions:
        rows = []
        for seed in range(seeds):
            la = LaplaceLoRA(model, low_rank=low_rank, prior_precision=lam, subsample=frac, subsample_seed=seed).fit(pairs, batch_size=batch_size)
            curv = (sum(float(((la.curvature[n].dense().double() - h) ** 2).sum()) for n, h in dense_full.items()) / sq_full) ** 0.5
            logdet = abs(logdet_posterior_precision(list(la.curvature.values()), lam) - logdet_full) / abs(logdet_full)
            var = float(((la.score_pairs(prompts, chosen, rejected).var.double() - var_full).abs() / var_full).median())
            rows.append((curv, logdet, var))
        out["fractions"][frac] = {k: statistics.mean(r[i] for r in rows) for i, k in enumerate(("curvature", "logdet", "margin_var_median"))}
        print(f"subsample {frac}: {out['fractions'][frac]}", flush=True)
    return out


def minilm_case(args) -> dict:
    pairs = load_preferences(DATA).pairs
    train, held_out = pairs[: args.pairs], pairs[-args.score_batch :]
    model = RewardModel.from_config(RewardModelConfig(backbone="minilm", lora_r=args.lora_r, max_length=args.max_length), seed=0).eval()
    with torch.no_grad():  # a non-zero LoRA B, as after training (peft initialises B = 0)
        for layer in model.lora_modules().values():
            layer.lora_B["default"].weight.normal_(0, 0.02)

    batch_pairs = train[: args.score_batch]
    prompts, responses = [p.prompt for p in batch_pairs], [p.chosen for p in batch_pairs]
    state: dict[str, LaplaceLoRA] = {}

    def fit(subsample: float = 1.0) -> None:  # a fresh posterior at the current weights, as after training
        state["la"] = LaplaceLoRA(model, low_rank=args.low_rank, subsample=subsample)
        state["la"].fit(train, batch_size=args.batch_size)
        state["la"].optimize_prior_precision()

    fit()
    model.score(prompts, responses, batch_size=args.score_batch)  # warm-up
    state["la"].score(prompts, responses, batch_size=args.score_batch)
    times = run_interleaved({
        "epoch": seconds_of(lambda: train_epoch(model, train, args.batch_size)),
        "fit": seconds_of(fit),
        "fit_sub": seconds_of(lambda: fit(args.subsample)),
        "map_score": seconds_of(lambda: model.score(prompts, responses, batch_size=args.score_batch)),
        "laplace_score": seconds_of(lambda: state["la"].score(prompts, responses, batch_size=args.score_batch)),
    }, args.rounds)
    fit(1.0)  # the full posterior, for the memory figure
    la = state["la"]
    lora_bytes = sum(b.module.weight.numel() * b.module.weight.element_size() for b in la.blocks_list)
    result = {
        "pairs": len(train), "batch_size": args.batch_size, "score_batch": args.score_batch, "max_length": args.max_length,
        "lora_r": args.lora_r, "low_rank": args.low_rank, "n_params": la.n_params, "threads": args.threads,
        "rounds": args.rounds, "subsample": args.subsample, "times": times,
        "predictive_ratio_rounds": paired_ratios(times["laplace_score"], times["map_score"]),
        "fit_ratio_rounds": paired_ratios(times["fit"], times["epoch"]),
        "fit_sub_ratio_rounds": paired_ratios(times["fit_sub"], times["epoch"]),
        "posterior_bytes": la.posterior_nbytes(), "lora_bytes": lora_bytes, "memory_ratio": la.posterior_nbytes() / lora_bytes,
        "prior_precision": la.prior_precision,
    }
    if args.accuracy_pairs:
        result["subsample_accuracy"] = subsample_accuracy(model, pairs[: args.accuracy_pairs], held_out, (0.125, 0.25, 0.5, 1.0),
                                                          args.accuracy_seeds, args.batch_size, args.low_rank)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", choices=["minilm", "llama7b", "all"], default="all")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--score-batch", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--low-rank", type=int, default=16)
    parser.add_argument("--oversample", type=int, default=16, help="Extra eigenpairs of streamed factors (llama7b).")
    parser.add_argument("--subsample", type=float, default=0.25, help="Fraction of the pairs of the subsampled fit.")
    parser.add_argument("--accuracy-pairs", type=int, default=256, help="Pairs of the subsample accuracy check (minilm; 0: skip).")
    parser.add_argument("--accuracy-seeds", type=int, default=2)
    parser.add_argument("--llama-pairs", type=int, default=16)
    parser.add_argument("--llama-batch", type=int, default=4)
    parser.add_argument("--llama-length", type=int, default=32)
    parser.add_argument("--full-fit", action="store_true", help="llama7b: also time the fit on all pairs.")
    parser.add_argument("--dense-contrast", action="store_true", help="llama7b: also measure the dense-factor fit at 1 block.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="Interleaved rounds (median ratios reported).")
    parser.add_argument("--small", action="store_true", help="Tiny sizes (8 pairs, length 32, 2 rounds; a 512-wide Llama): checks that it runs.")
    parser.add_argument("--out", default=None, help="Write the results as JSON here.")
    args = parser.parse_args()
    if args.small:
        args.pairs, args.batch_size, args.score_batch, args.max_length, args.rounds = 8, 4, 8, 32, 2
        args.accuracy_pairs, args.accuracy_seeds, args.llama_pairs, args.llama_batch, args.llama_length = 16, 1, 8, 2, 16
        args.low_rank, args.oversample, args.subsample = 4, 4, 0.5
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    result: dict = {}
    if args.case in ("minilm", "all"):
        r = result["minilm"] = minilm_case(args)
        print(json.dumps(r, indent=2))
        print(format_ratio("predictive / MAP scoring", r["predictive_ratio_rounds"], "target <= 2.5x", ok=lambda m: m <= 2.5))
        print(format_ratio("fit / one training epoch", r["fit_ratio_rounds"], "target <= 0.5x", ok=lambda m: m <= 0.5))
        print(format_ratio(f"fit on a {args.subsample} subsample / one training epoch", r["fit_sub_ratio_rounds"], "target <= 0.5x",
                           ok=lambda m: m <= 0.5))
        print(f"factor memory / LoRA memory: {r['memory_ratio']:.2f}x")
    if args.case in ("llama7b", "all"):
        import laplace_llama

        r = result["llama7b"] = laplace_llama.run(args)
        print(json.dumps(r, indent=2))
        mib = 2**20
        print(f"llama-shaped: peak curvature memory {r['curvature_peak_per_block'] / mib:.2f} MiB per block, "
              f"{r['curvature_peak_32'] / mib:.0f} MiB at 32 blocks = {r['memory_ratio_32']:.2f}x the LoRA weights "
              f"({r['lora_bytes_32'] / mib:.0f} MiB) (target <= 4x) -> {'PASS' if r['memory_ratio_32'] <= 4 else 'FAIL'}; "
              f"dense factors would hold {r['dense_state_32'] / 2**30:.1f} GiB")
        print(f"llama-shaped: fit peak - training-pass peak {r['extra_fit_peak_per_block'] / mib:.2f} MiB per block, "
              f"{r['extra_fit_peak_32'] / mib:.0f} MiB at 32 blocks = {r['extra_ratio_32']:.2f}x the LoRA weights")
        print(format_ratio(f"llama-shaped fit on a {args.subsample} subsample / one training epoch", r["fit_sub_ratio_rounds"],
                           "target <= 0.5x", ok=lambda m: m <= 0.5))
        if "fit_full_ratio_rounds" in r:
            print(format_ratio("llama-shaped fit on all pairs / one training epoch", r["fit_full_ratio_rounds"]))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
