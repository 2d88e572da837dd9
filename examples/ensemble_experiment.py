"""Ensemble reward models on real human preferences: accuracy, calibration, and uncertainty under shift.

Data: Anthropic HH-RLHF harmless-base test split (2,312 pairs), split 80/20 with seed 0 (train /
test). Every method trains on the same 80% for one epoch on all-MiniLM-L6-v2 (max 128 tokens,
LoRA r=8 on query/value of the top 2 of 6 blocks) and is evaluated on the 20%:

  map                     one LoRA reward model
  heads                   head ensemble: one shared LoRA, K scalar heads
  lora-ensemble           K LoRA members, one batched pass (top 2 blocks)
  diverse-lora-ensemble   the same with the nuclear-norm diversity term (UP-RLHF eq. 12)
  independent             K reward models trained from different seeds
  two-stage               (optional) shared-LoRA head ensemble merged, then K LoRA members

Metrics: accuracy, Bradley-Terry NLL and ECE (15 bins) of the predictive preference probability
on the test pairs, and the AUROC of each method's std for telling in-distribution responses (HH
test responses) from shifted ones (PandaLM and MT-Bench responses to their own instructions).

Resumable: each method's metrics go to OUT/<method>.json and finished methods are skipped. The
table is (re)written to docs/results/ensembles.md from whatever JSON files exist.

    flock /tmp/bayesrm-heavy.lock python examples/ensemble_experiment.py [--out runs/ensemble_experiment]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from bayesrm.data.loading import load_preferences  # noqa: E402
from bayesrm.data.splits import split_pairs  # noqa: E402
from bayesrm.evaluation.evaluate import evaluate_preferences  # noqa: E402
from bayesrm.evaluation.metrics import auroc  # noqa: E402
from bayesrm.models.backbones import load_config  # noqa: E402
from bayesrm.models.reward_model import RewardModelConfig  # noqa: E402
from bayesrm.training.trainer import RewardTrainingConfig  # noqa: E402
from bayesrm.uncertainty.factory import train_model  # noqa: E402

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parents[1] / "docs" / "results" / "ensembles.md"
METHODS = ("map", "heads", "lora-ensemble", "diverse-lora-ensemble", "independent")
ALL_METHODS = METHODS + ("two-stage", "laplace", "laplace-ensemble")
LAPLACE_BASE = {"laplace": "map", "laplace-ensemble": "lora-ensemble"}
"""Laplace methods: a K-FAC Laplace-LoRA posterior fitted on the trained model of the base method."""


def load_data(args: argparse.Namespace):
    """(train pairs, test pairs, in-distribution (prompt, response) sample, shifted sample)."""
    data = Path(args.data)
    hh = load_preferences(data / "hh-rlhf-harmless-base-test.jsonl.gz").pairs
    splits = split_pairs(hh, (0.8, 0.0, 0.2), seed=0)
    train = splits.train[: args.train_limit] if args.train_limit else splits.train
    rng = random.Random(0)
    shifted = []
    for name in ("pandalm-test-human.jsonl", "mtbench-human-pairs.jsonl"):
        pairs = load_preferences(data / name, skip_invalid=True).pairs
        shifted += [(p.prompt, r) for p in pairs for r in (p.chosen, p.rejected)]
    shifted = rng.sample(shifted, min(args.shifted, len(shifted)))
    in_dist = [(p.prompt, r) for p in splits.test for r in (p.chosen, p.rejected)]
    in_dist = rng.sample(in_dist, min(args.shifted, len(in_dist)))
    return train, splits.test, in_dist, shifted


def method_spec(method: str, args: argparse.Namespace) -> dict:
    """train_model keyword arguments: every method adapts the same top blocks (the top args.top_layers)."""
    method = LAPLACE_BASE.get(method, method)
    n_blocks = load_config(args.backbone).num_hidden_layers
    top_blocks = list(range(n_blocks - args.top_layers, n_blocks))
    rm = RewardModelConfig(backbone=args.backbone, max_length=args.max_length, lora_r=8, lora_alpha=16, target_modules=["query", "value"])
    if method in ("map", "heads", "independent"):
        return {"method": method, "rm_config": replace(rm, lora_layers=top_blocks)}
    spec = {"method": "lora-ensemble", "rm_config": rm, "top_layers": args.top_layers}
    if method == "diverse-lora-ensemble":
        spec["diversity"] = args.diversity
    if method == "two-stage":
        spec["method"] = "two-stage"
    return spec


def run_method(method: str, data, args: argparse.Namespace) -> dict:
    train, test, in_dist, shifted = data
    spec = method_spec(method, args)
    training = RewardTrainingConfig(
        output_dir=str(Path(args.out) / method), num_train_epochs=args.epochs, per_device_train_batch_size=16,
        learning_rate=args.lr, seed=args.seed, logging_steps=20, disable_tqdm=True, save_strategy="no",
    )
    members = 1 if method in ("map", "laplace") else args.members
    start = time.perf_counter()
    model = train_model(train_pairs=train, training_config=training, members=members, seed=args.seed, **spec)
    train_s = time.perf_counter() - start
    fit_s = None
    if method in LAPLACE_BASE:
        from bayesrm.uncertainty.laplace import LaplaceEnsemble, LaplaceLoRA

        start = time.perf_counter()
        model = LaplaceLoRA(model) if method == "laplace" else LaplaceEnsemble.from_ensemble(model)
        model.fit(train, batch_size=16)
        model.optimize_prior_precision()
        fit_s = time.perf_counter() - start
    start = time.perf_counter()
    result = evaluate_preferences(model, test, batch_size=32)
    ood_in = model.score([p for p, _ in in_dist], [r for _, r in in_dist], batch_size=32)
    ood_out = model.score([p for p, _ in shifted], [r for _, r in shifted], batch_size=32)
    score_s = time.perf_counter() - start
    with torch.no_grad():
        diversity = float(model.diversity()) if hasattr(model, "diversity") else None
    std = np.concatenate([ood_in.std.numpy(), ood_out.std.numpy()])
    labels = np.concatenate([np.zeros(len(ood_in)), np.ones(len(ood_out))])
    out = {
        "method": method,
        "members": members,
        "metrics": result.metrics,
        "auroc_std_shifted": auroc(std, labels),
        "std_in_distribution": float(ood_in.std.mean()),
        "std_shifted": float(ood_out.std.mean()),
        "train_seconds": train_s,
        "laplace_fit_seconds": fit_s,
        "score_seconds": score_s,
        "diversity": diversity,
        "settings": {k: v for k, v in vars(args).items() if k != "methods"},
        "device": device_note(),
    }
    return out


def device_note() -> str:
    if torch.cuda.is_available():
        return f"training and scoring on {torch.cuda.get_device_name()}"
    return f"CPU ({platform.machine()}), {torch.get_num_threads()} threads on a shared 2-core machine"


def write_table(out_dir: Path, args: argparse.Namespace, n: dict[str, int]) -> str:
    rows = []
    for method in ALL_METHODS:
        path = out_dir / f"{method}.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        m = r["metrics"]
        div = f"{r['diversity']:.2f}" if r.get("diversity") is not None else "-"
        rows.append(
            f"| {method} | {r['members']} | {m['accuracy']:.3f} | {m['nll']:.3f} | {m['ece']:.3f} | "
            f"{r['auroc_std_shifted']:.3f} | {r['std_in_distribution']:.3f} | {r['std_shifted']:.3f} | {div} | "
            f"{r['train_seconds'] / 60:.1f} |"
        )
    text = f"""# Ensemble reward models on HH-RLHF harmless (measured)

Produced by `examples/ensemble_experiment.py` ({time.strftime('%Y-%m-%d')}, torch {torch.__version__}, {device_note()}).

Setup: HH-RLHF harmless-base test split, 80/20 split with seed 0 ({n['train']} train / {n['test']} test
pairs). Backbone {args.backbone!r} (all-MiniLM-L6-v2), max {args.max_length} tokens, LoRA r=8 (alpha 16) on query/value of the
top {args.top_layers} of 6 blocks for every method, {args.epochs:g} epoch, batch 16 pairs, learning rate
{args.lr:g}, training seed {args.seed}, K={args.members} members, diversity weight lambda={args.diversity:g} for the diverse LoRA ensemble,
training target `members` (each member's own Bradley-Terry loss).

Accuracy, NLL and ECE (15 equal-width bins) are on the {n['test']} test pairs, with the predictive
probability sigmoid(mu_f / sqrt(1 + pi var_f / 8)). AUROC: how well each method's std (population
std over members, ddof=0) separates {n['in']} in-distribution responses (HH test) from {n['shifted']} shifted
ones (PandaLM + MT-Bench responses to their own instructions); 0.5 = chance (a point model has std 0
everywhere, so 0.5 by construction). "D" is the nuclear-norm diversity of the LoRA members' stacked
A matrices (UP-RLHF eq. 12; between 1 and sqrt(K r) = {(args.members * 8) ** 0.5:.2f}).

| method | K | accuracy | NLL | ECE | AUROC(std, shifted) | mean std (in) | mean std (shifted) | D | train (min) |
|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|
""" + "\n".join(rows) + "\n"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/ensemble_experiment")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=ALL_METHODS)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--top-layers", type=int, default=2)
    parser.add_argument("--diversity", type=float, default=0.1)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--seed", type=int, default=0, help="training / initialisation seed (the data split is always seed 0)")
    parser.add_argument("--shifted", type=int, default=300, help="responses per side of the AUROC")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--train-limit", type=int, default=None, help="use only this many training pairs (smoke runs)")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--data", default=str(DATA), help="directory holding the shared data files")
    parser.add_argument("--backbone", default="minilm", help="the embedded alias or a local copy of all-MiniLM-L6-v2")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_data(args)
    n = {"train": len(data[0]), "test": len(data[1]), "in": len(data[2]), "shifted": len(data[3])}
    print(f"data: {n}")
    for method in args.methods:
        path = out_dir / f"{method}.json"
        if path.exists():
            print(f"{method}: done before ({path}), skipped")
            continue
        print(f"{method}: training ...", flush=True)
        result = run_method(method, data, args)
        path.write_text(json.dumps(result, indent=2))
        print(f"{method}: {json.dumps({k: result[k] for k in ('metrics', 'auroc_std_shifted', 'train_seconds')})}", flush=True)
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        Path(args.results).write_text(write_table(out_dir, args, n))
    Path(args.results).write_text(write_table(out_dir, args, n))
    print(Path(args.results).read_text())


if __name__ == "__main__":
    main()
