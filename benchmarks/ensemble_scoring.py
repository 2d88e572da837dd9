"""Scoring cost of a K-member LoRA ensemble: one batched pass vs PEFT adapter switching vs one model.

Same backbone (all-MiniLM-L6-v2), LoRA (r=8, alpha=16, query/value) and batch (PAIRS pairs, both
responses, MAX_LENGTH tokens of real HH-RLHF text) for every method:

  single         one RewardModel (peft LoRA on all blocks)
  peft-switch    one peft model with K named adapters, ``set_adapter`` + a full pass per member
  batched        LoRAEnsemble, all K members in one batched pass (adapters on all blocks)
  peft-switch-tL as peft-switch, adapters on the top L blocks only (still K full passes)
  batched-tL     LoRAEnsemble with adapters on the top L blocks only (bottom run once, shared)

FLOP arithmetic for n blocks: peft-switch and batched both run n*K block-passes (batched saves only
Python / kernel-launch overhead); batched-tL runs (n - L) + K*L, i.e. (n - L + K L) / n of a single
model: with n=6, K=5 that is 1.67x for L=1 and 2.33x for L=2, against K = 5x for switching.

Timing: methods interleaved for ROUNDS rounds in one process (single, peft-switch, batched, ...,
then again; see interleave.py), inference mode. Each ratio is taken per round and reported as the
median with its range over the rounds, so a burst of load from another job cannot flip a verdict.
Memory: each method in a fresh subprocess; peak RSS during scoring minus RSS before it (the peak is
reset through /proc/self/clear_refs), i.e. activations, plus the parameter bytes of the model.
Targets (DESIGN.md section 6): batched >= 2x faster than peft-switch; batched-tL <= 2x single.

    flock /tmp/bayesrm-heavy.lock python benchmarks/ensemble_scoring.py [--members 5] [--top-layers 1 2]
    python benchmarks/ensemble_scoring.py --small    # a quick check that it runs
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import replace

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

def methods(top_layers: list[int]) -> list[str]:
    return ["single", "peft-switch", "batched"] + [f"{m}-t{L}" for L in top_layers for m in ("peft-switch", "batched")]


def build(method: str, args: argparse.Namespace):
    """(callable scoring the batch, model) for one method."""
    from peft import LoraConfig

    from bayesrm.models.reward_model import RewardModel, RewardModelConfig
    from bayesrm.uncertainty.base import EnsembleConfig
    from bayesrm.uncertainty.lora_ensemble import LoRAEnsemble

    base, _, top = method.partition("-t")
    top_layers = int(top) if top else None
    config = RewardModelConfig(backbone="minilm", max_length=args.max_length, lora_r=8, lora_alpha=16, target_modules=["query", "value"])
    if method == "single":
        model = RewardModel.from_config(config, seed=0).eval()
        return (lambda ids, mask: model(ids, mask)), model
    if base == "peft-switch":
        layers = list(range(6 - top_layers, 6)) if top_layers else None
        model = RewardModel.from_config(replace(config, lora_layers=layers), seed=0).eval()
        names = ["default"] + [f"m{k}" for k in range(1, args.members)]
        for name in names[1:]:
            model.backbone.add_adapter(name, LoraConfig(r=8, lora_alpha=16, target_modules=["query", "value"], layers_to_transform=layers))

        def switch(ids, mask):
            out = []
            for name in names:
                model.backbone.set_adapter(name)
                out.append(model(ids, mask))
            return torch.stack(out)  # [K, B]

        return switch, model
    model = LoRAEnsemble.from_config(config, EnsembleConfig(members=args.members, top_layers=top_layers, seed=0)).eval()
    return (lambda ids, mask: model(ids, mask)), model


def make_batch(args: argparse.Namespace) -> dict[str, torch.Tensor]:
    """PAIRS pairs from HH-RLHF, chosen + rejected, encoded and padded to MAX_LENGTH tokens."""
    from bayesrm.data.encoding import PairEncoder
    from bayesrm.data.loading import embedded_hh_harmless_path, load_preferences
    from bayesrm.models import backbones

    pairs = load_preferences(embedded_hh_harmless_path()).pairs
    encoder = PairEncoder(backbones.load_tokenizer("minilm"), max_length=args.max_length)
    # the longest pairs, so that every row is (close to) MAX_LENGTH tokens
    pairs = sorted(pairs, key=lambda p: -len(p.prompt if isinstance(p.prompt, str) else str(p.prompt)))[: args.pairs]
    seqs = encoder.encode([p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs])
    return encoder.pad(seqs)


def param_bytes(model: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _status_kib(field: str) -> int:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory(method: str, args: argparse.Namespace) -> dict[str, float]:
    """In this (fresh) process: peak RSS growth while scoring the batch once, and parameter bytes."""
    batch = make_batch(args)
    fn, model = build(method, args)
    with torch.inference_mode():
        fn(batch["input_ids"][:2], batch["attention_mask"][:2])  # warm-up on a tiny batch
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM (peak RSS) to the current RSS
        before = _status_kib("VmRSS")
        fn(batch["input_ids"], batch["attention_mask"])
        peak = _status_kib("VmHWM")
    return {"activation_peak_mib": (peak - before) / 1024, "param_mib": param_bytes(model) / 2**20}


def measure_time(args: argparse.Namespace) -> dict[str, list[float]]:
    """Seconds per round of every method, the methods interleaved round by round."""
    from interleave import run_interleaved, seconds_of

    batch = make_batch(args)
    names = methods(args.top_layers)
    fns = {m: build(m, args)[0] for m in names}
    with torch.inference_mode():
        runs = {m: seconds_of(lambda fn=fns[m]: fn(batch["input_ids"], batch["attention_mask"])) for m in names}
        return run_interleaved(runs, args.rounds, warmup=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--top-layers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memory-only", help=argparse.SUPPRESS)
    parser.add_argument("--no-memory", action="store_true", help="Skip the per-method memory subprocesses.")
    parser.add_argument("--small", action="store_true", help="Tiny sizes (K=2, 4 pairs, length 32, L=1, 2 rounds): checks that it runs.")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args()
    if args.small:
        args.members, args.top_layers, args.pairs, args.max_length, args.rounds = 2, [1], 4, 32, 2
    torch.set_num_threads(args.threads)
    if args.memory_only:
        print(json.dumps(measure_memory(args.memory_only, args)))
        return

    shape = tuple(make_batch(args)["input_ids"].shape)
    print(f"batch: {args.pairs} pairs -> input_ids {shape}, K={args.members}, top L in {args.top_layers}, {args.threads} threads")
    from interleave import format_ratio, paired_ratios

    names = methods(args.top_layers)
    memory = {}
    for m in [] if args.no_memory else names:
        cmd = [sys.executable, __file__, "--memory-only", m] + sys.argv[1:]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        memory[m] = json.loads(out)
    times = measure_time(args)
    seconds = {m: statistics.median(t) for m, t in times.items()}
    print("| method | median time (s) | vs single (median of rounds) | activation peak (MiB) | params (MiB) |\n"
          "|---|---:|---:|---:|---:|")
    for m in names:
        mem = memory.get(m)
        mem_cells = f"{mem['activation_peak_mib']:.1f} | {mem['param_mib']:.1f}" if mem else "- | -"
        vs_single = statistics.median(paired_ratios(times[m], times["single"]))
        print(f"| {m} | {seconds[m]:.3f} | {vs_single:.2f} | {mem_cells} |")
    # (label, numerator, denominator, target): each ratio per round, then median and range
    checks = [("batched vs peft-switch (speed-up)", "peft-switch", "batched", ">= 2")]
    for L in args.top_layers:
        checks += [(f"batched-t{L} vs peft-switch (speed-up)", "peft-switch", f"batched-t{L}", ">= 2"),
                   (f"batched-t{L} vs peft-switch-t{L} (speed-up)", f"peft-switch-t{L}", f"batched-t{L}", ">= 2"),
                   (f"batched-t{L} vs single (cost)", f"batched-t{L}", "single", "<= 2")]
    ratios = {}
    for label, num, den, target in checks:
        per_round = paired_ratios(times[num], times[den])
        ratios[label] = {"median": statistics.median(per_round), "rounds": per_round, "target": target}
        ok = (lambda v: v <= 2) if target == "<= 2" else (lambda v: v >= 2)
        print(format_ratio(label, per_round, f"target {target}", ok=ok))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"seconds": seconds, "times": times, "memory": memory, "ratios": ratios, "args": vars(args)}, f, indent=2)


if __name__ == "__main__":
    main()
