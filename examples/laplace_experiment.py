"""Laplace-LoRA on real human preferences: HH-RLHF harmless (80/20 split, seed 0), MiniLM + LoRA.

1. train a MAP reward model for one epoch (bayesrm's RewardTrainer);
2. fit Laplace-LoRA (K-FAC, evidence-optimal prior precision);
3. accuracy / NLL / ECE of MAP vs Laplace (probit) on the held-out 20%;
4. AUROC of the Laplace std for telling held-out HH responses from shifted ones
   (PandaLM and MT-Bench responses).

Resumable: each stage's output is saved in --out and reused when present. Heavy; run under flock:
    nohup flock /tmp/bayesrm-heavy.lock .venv/bin/python examples/laplace_experiment.py --out runs/laplace_hh > laplace.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from bayesrm.data.loading import load_preferences
from bayesrm.data.splits import split_pairs
from bayesrm.evaluation.evaluate import evaluate_preferences
from bayesrm.evaluation.metrics import auroc
from bayesrm.models.reward_model import RewardModel, RewardModelConfig
from bayesrm.uncertainty.laplace import LaplaceLoRA

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shifted_responses(n_each: int) -> tuple[list, list]:
    """(prompts, responses): the chosen responses of the first n_each PandaLM and MT-Bench pairs."""
    prompts, responses = [], []
    for name in ("pandalm-test-human.jsonl", "mtbench-human-pairs.jsonl"):
        pairs = load_preferences(DATA / name, skip_invalid=True).pairs[:n_each]
        prompts += [p.prompt for p in pairs]
        responses += [p.chosen for p in pairs]
    return prompts, responses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/laplace_hh")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--lora-r", type=int, default=8)
    parser.add_argument("--low-rank", type=int, default=16)
    parser.add_argument("--shifted", type=int, default=300, help="Shifted responses per source.")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}

    splits = split_pairs(load_preferences(DATA / "hh-rlhf-harmless-base-test.jsonl.gz").pairs, fractions=(0.8, 0.0, 0.2), seed=0)
    train, test = splits.train, splits.test
    print(f"HH-RLHF harmless: {len(train)} train / {len(test)} test pairs")

    map_dir, post_dir = out / "map", out / "laplace"
    if not (map_dir / "config.json").is_file():
        from bayesrm.training.trainer import RewardTrainingConfig, train_reward_model

        t = time.perf_counter()
        model = RewardModel.from_config(RewardModelConfig(backbone="minilm", lora_r=args.lora_r, max_length=args.max_length), seed=0)
        train_reward_model(model, train, RewardTrainingConfig(output_dir=str(out / "trainer"), num_train_epochs=1.0, use_cpu=True, seed=0))
        model.save_pretrained(map_dir)
        timings["train_epoch_s"] = time.perf_counter() - t
    model = RewardModel.from_pretrained(map_dir).eval()

    if not (post_dir / "config.json").is_file():
        t = time.perf_counter()
        la = LaplaceLoRA(model, low_rank=args.low_rank).fit(train, batch_size=16, progress=True)
        la.optimize_prior_precision()
        timings["laplace_fit_s"] = time.perf_counter() - t
        la.save_pretrained(post_dir)
    la = LaplaceLoRA.from_pretrained(post_dir)
    print(f"prior precision {la.prior_precision:.4g}, log evidence {la.log_marginal_likelihood():.2f}, P = {la.n_params}")

    results: dict = {"n_train": len(train), "n_test": len(test), "prior_precision": la.prior_precision,
                     "log_evidence": la.log_marginal_likelihood(), "n_params": la.n_params,
                     "posterior_bytes": la.posterior_nbytes(), **timings}
    for name, scorer in (("map", la.model), ("laplace", la)):
        results[name] = evaluate_preferences(scorer, test, batch_size=32, progress=True).metrics
        print(name, json.dumps(results[name]))

    id_pred = la.score([p.prompt for p in test], [p.chosen for p in test], batch_size=32, progress=True)
    sp, sr = shifted_responses(args.shifted)
    ood_pred = la.score(sp, sr, batch_size=32, progress=True)
    scores = np.concatenate([id_pred.std.numpy(), ood_pred.std.numpy()])
    labels = np.concatenate([np.zeros(len(id_pred)), np.ones(len(ood_pred))])
    results["ood"] = {
        "n_in": len(id_pred), "n_shifted": len(ood_pred),
        "auroc_std": auroc(scores, labels),
        "mean_std_in": float(id_pred.std.mean()), "mean_std_shifted": float(ood_pred.std.mean()),
    }
    print("ood", json.dumps(results["ood"]))
    (out / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
