"""Policy sampling throughput and fidelity: the sampler in fp32 and bf16 against HF ``generate`` (and vLLM).

Methods, on the same prompts and settings (T = 1, no top-k / top-p, the same stop tokens), at
batch 64 and 256 (samples of several prompts share a batch):

- ``sampler fp32 (today)``    the baseline: the sampler as of 2026-12-02 02:30 in fp32 (the model's
                              sdpa attention, all rows sampled at once, a fresh bf16 copy per call:
                              restored by ``attention="model"`` and patches);
- ``sampler bf16 (today)``    the same in bf16;
- ``sampler bf16 (new)``      the defaults of 2026-12-02 05:30: bf16, grouped decode attention, rows sampled
                              in chunks of 32, the bf16 copy of the model reused while its weights are unchanged
                              (the linear layers on plain weights: packing patched off);
- ``sampler bf16 (packed)``   the defaults now: as ``new``, with the linear layers and the LM head on
                              prepacked oneDNN weights (bayesrm.generation.packing; bit-identical outputs);
- ``sampler fp32 (before)``   (``--methods``) the 2026-12-01 sampler: float64 five-pass sampling rule;
- ``HF generate fp32``        ``model.generate`` on the same rows, a fresh GenerationConfig;
- ``vLLM``                    when vllm is installed and a CUDA device is present.

Runs are interleaved and repeated (A B C D A B C D ...); the table shows each method's median
tok/s, its median tokens per CPU-second (one thread: the rate on a core of its own, which stays
meaningful on a shared, loaded machine where wall time mostly measures the scheduler) and its
median ratio (with range over repeats) to ``sampler fp32 (today)`` of the same repeat, in CPU
time. Fidelity: the mean log-prob per token (stop token included) of each method's samples under
the fp32 model, with a standard error clustered by sequence (the fp32 sampler's own returned
log-probs are those of the fp32 model); a method matches the fp32 distribution when it differs
from ``sampler fp32 (today)`` by less than 2 standard errors (of the difference). Run on the
embedded SmolLM2-135M-Instruct:

    python benchmarks/generation_throughput.py [--new-tokens 32] [--repeats 2] [--batches 64 256]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from typing import Callable

import torch
from transformers import GenerationConfig

import bayesrm.generation.decoding as decoding
import bayesrm.generation.sampler as sampler_module
from bayesrm.generation.packing import packed_linears
from bayesrm.data.prompts import chitchat_prompts
from bayesrm.generation import PolicySampler, SamplingConfig
from bayesrm.generation.prompting import encode_prompt, stop_token_ids
from bayesrm.models.policy import load_policy

Rows = list[tuple[list[int], list[int]]]  # per sample: (prompt ids, generated ids with the stop token)
BASELINE = "sampler fp32 (today)"


def legacy_sample_with_logprobs(logits, uniforms, temperature=1.0, top_k=0, top_p=1.0):
    """The sampling rule before the two-level CDF: float64 softmax + full cumsum (and no log-probs)."""
    tokens = decoding._sample_filtered(logits, uniforms, temperature, top_k, top_p)
    return tokens, torch.zeros(tokens.shape)


def run_sampler(model, tok, prompts, n, batch, new_tokens, dtype, version="new") -> tuple[int, float, float, Rows, list]:
    """version: packed (the defaults now) | new (no packed weights) | today (also attention "model", no row
    chunks, no reused bf16 copy) | before (also the float64 rule)."""
    attention = "grouped" if version in ("new", "packed") else "model"
    config = SamplingConfig(max_new_tokens=new_tokens, batch_size=batch, dtype=dtype, seed=0, attention=attention)
    sampler = PolicySampler(model, tok, "smollm2", config)  # no cache: every call generates
    captured: Rows = []
    logprobs: list[list[float]] = []
    inner = sampler.backend.generate
    cpu = [0.0]

    def generate(prompt_ids, rows, seeds, cfg):
        c0 = time.process_time()
        gens = inner(prompt_ids, rows, seeds, cfg)
        cpu[0] += time.process_time() - c0
        captured.extend((list(prompt_ids[r]), list(g.token_ids) + ([g.stop_id] if g.finished else []))
                        for r, g in zip(rows, gens))
        logprobs.extend(list(g.logprobs) for g in gens)
        return gens

    sampler.backend.generate = generate
    original, chunk, cast, pack = (decoding.sample_with_logprobs, decoding._ROW_CHUNK, sampler_module.model_in_dtype,
                                   sampler_module.packed_linears)
    if version == "before":
        decoding.sample_with_logprobs = legacy_sample_with_logprobs
    if version != "packed":  # the linear layers on plain weights
        sampler_module.packed_linears = functools.partial(packed_linears, enabled=False)
    if version not in ("new", "packed"):  # all rows sampled at once, a fresh bf16 copy at every call
        decoding._ROW_CHUNK = 1 << 30
        sampler_module.model_in_dtype = functools.partial(cast, reuse=False)
    try:
        sampler.sample_records(prompts, n, progress=False)
    finally:
        (decoding.sample_with_logprobs, decoding._ROW_CHUNK, sampler_module.model_in_dtype,
         sampler_module.packed_linears) = original, chunk, cast, pack
    return sampler.stats.tokens, sampler.stats.seconds, cpu[0], captured, logprobs


def run_generate(model, tok, prompts, n, batch, new_tokens, seed) -> tuple[int, float, float, Rows, list]:
    eos = stop_token_ids(model, tok)
    encoded = [encode_prompt(tok, p) for p in prompts for _ in range(n)]
    gen_cfg = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new_tokens,
                               pad_token_id=tok.pad_token_id, eos_token_id=eos)
    torch.manual_seed(seed)
    tokens, seconds, cpu, captured = 0, 0.0, 0.0, []
    for start in range(0, len(encoded), batch):
        chunk = encoded[start : start + batch]
        width = max(len(c) for c in chunk)
        ids = torch.tensor([[tok.pad_token_id] * (width - len(c)) + c for c in chunk])
        mask = torch.tensor([[0] * (width - len(c)) + [1] * len(c) for c in chunk])
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=gen_cfg)
        seconds += time.perf_counter() - t0
        cpu += time.process_time() - c0
        for context, row in zip(chunk, out[:, width:].tolist()):
            cut = next((i + 1 for i, t in enumerate(row) if t in eos), len(row))
            captured.append((context, row[:cut]))
            tokens += cut
    return tokens, seconds, cpu, captured, []


def fp32_logprobs(model, tok, rows: Rows, batch: int = 8, known: list | None = None) -> tuple[float, float, int]:
    """(mean log-prob per token, its standard error clustered by sequence, tokens) under the fp32 model;
    ``known``: the per-token fp32 log-probs of each row already (the fp32 sampler's), no forward pass."""
    sums, lengths = [], []
    if known:
        sums, lengths = [sum(lp) for lp in known], [len(r) for _, r in rows]
    for start in range(0, len(rows) if not known else 0, batch):
        seqs = [c + r for c, r in rows[start : start + batch]]
        width = max(len(s) for s in seqs)
        ids = torch.tensor([[tok.pad_token_id] * (width - len(s)) + s for s in seqs])
        mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
        with torch.inference_mode():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(-1) - 1).clamp_min(0)).logits
        logp = logits[:, :-1].float().log_softmax(-1).gather(-1, ids[:, 1:, None])[..., 0]  # [b, width - 1]
        for i, (_, r) in enumerate(rows[start : start + batch]):
            sums.append(logp[i, width - 1 - len(r) :].double().sum().item() if r else 0.0)
            lengths.append(len(r))
    s, m = torch.tensor(sums, dtype=torch.float64), torch.tensor(lengths, dtype=torch.float64)
    mean = s.sum() / m.sum()
    k = len(sums)
    se = ((s - mean * m).pow(2).sum() * k / max(k - 1, 1)).sqrt() / m.sum()
    return mean.item(), se.item(), int(m.sum())


def methods(model, tok, args) -> dict[str, Callable]:
    out = {
        BASELINE: lambda p, n, b, rep: run_sampler(model, tok, p, n, b, args.new_tokens, "fp32", "today"),
        "sampler bf16 (today)": lambda p, n, b, rep: run_sampler(model, tok, p, n, b, args.new_tokens, "bf16", "today"),
        "sampler bf16 (new)": lambda p, n, b, rep: run_sampler(model, tok, p, n, b, args.new_tokens, "bf16", "new"),
        "sampler bf16 (packed)": lambda p, n, b, rep: run_sampler(model, tok, p, n, b, args.new_tokens, "bf16", "packed"),
        "sampler fp32 (new)": lambda p, n, b, rep: run_sampler(model, tok, p, n, b, args.new_tokens, "fp32", "new"),
        "sampler fp32 (before)": lambda p, n, b, rep: run_sampler(model, tok, p, n, b, args.new_tokens, "fp32", "before"),
        "HF generate fp32": lambda p, n, b, rep: run_generate(model, tok, p, n, b, args.new_tokens, seed=rep),
    }
    try:
        import vllm  # noqa: F401

        if torch.cuda.is_available():
            from vllm import LLM

            from bayesrm.models.policy import resolve_policy

            llm = LLM(model=resolve_policy("smollm2"), dtype="bfloat16", seed=0)
            out["vLLM bf16"] = lambda p, n, b, rep: run_sampler(llm, tok, p, n, b, args.new_tokens, "auto", "today")
    except ImportError:
        print("vLLM not installed: skipped")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--samples-per-prompt", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU-time rates assume 1)")
    parser.add_argument("--methods", nargs="+", default=None,
                        help="method names (default: all but 'sampler fp32 (before)' and 'sampler fp32 (new)')")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = load_policy("smollm2")
    todo = methods(model, tok, args)
    wanted = args.methods or [m for m in todo if m not in ("sampler fp32 (before)", "sampler fp32 (new)")]
    todo = {m: run for m, run in todo.items() if m in wanted}
    baseline = BASELINE
    print(f"SmolLM2-135M-Instruct, {args.new_tokens} new tokens, T = 1, {args.threads} threads, "
          f"{args.repeats} interleaved repeats; rows per batch = batch size (several prompts per batch)")
    for batch in args.batches:
        n = args.samples_per_prompt
        prompts = chitchat_prompts(max(1, batch // n), seed=0)
        wall: dict[str, list[float]] = {m: [] for m in todo}
        rates: dict[str, list[float]] = {m: [] for m in todo}  # tokens per CPU-second
        samples: dict[str, Rows] = {}
        known: dict[str, list] = {}
        for rep in range(args.repeats):
            for name, run in todo.items():
                tokens, seconds, cpu, rows, logprobs = run(prompts, n, batch, rep)
                wall[name].append(tokens / seconds)
                rates[name].append(tokens / cpu)
                samples.setdefault(name, rows)
                if name.startswith("sampler fp32") and "before" not in name:
                    known.setdefault(name, logprobs)
                print(f"  batch {batch} repeat {rep}: {name:<24} {tokens:6d} tokens  {tokens / seconds:8.1f} tok/s  "
                      f"{tokens / cpu:8.1f} tok/CPU-s", flush=True)
        ref_name = baseline if baseline in samples else next(iter(samples))
        ref_mean, ref_se, _ = fp32_logprobs(model, tok, samples[ref_name], known=known.get(ref_name))
        print(f"\nbatch {batch} ({len(prompts)} prompts x {n} samples)")
        print(f"| method | tok/s wall (median) | tok/CPU-s (median) | ratio to {baseline}, CPU time (median, range) "
              "| mean log-prob/token under fp32 (SE) | diff / SE |")
        print("|---|---|---|---|---|---|")
        for name in todo:
            ratios = [r / b for r, b in zip(rates[name], rates[baseline])] if baseline in rates else [float("nan")]
            mean, se, ntok = fp32_logprobs(model, tok, samples[name], known=known.get(name))
            z = (mean - ref_mean) / (se**2 + ref_se**2) ** 0.5 if name != ref_name else 0.0
            print(f"| {name} | {statistics.median(wall[name]):.1f} | {statistics.median(rates[name]):.1f} | {statistics.median(ratios):.2f} "
                  f"({min(ratios):.2f}-{max(ratios):.2f}) | {mean:.3f} ({se:.3f}, {ntok} tokens) | {z:+.2f} |")
        best = "sampler bf16 (packed)" if "sampler bf16 (packed)" in rates else "sampler bf16 (new)"
        if best in rates and baseline in rates:
            ratio = statistics.median([r / b for r, b in zip(rates[best], rates[baseline])])
            print(f"target: {best} >= 2x {baseline}: {ratio:.2f}x -> {'OK' if ratio >= 2 else 'MISSED'}\n", flush=True)


if __name__ == "__main__":
    main()
