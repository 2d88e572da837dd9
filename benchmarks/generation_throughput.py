"""Generation for best-of-n: tokens/s of PolicySampler against a plain ``model.generate`` loop.

DESIGN.md section 6 target: PolicySampler at its batch size is at least as fast (tokens/s) as a
plain ``model.generate`` loop at batch 1, 4 and 8, on the same prompts and settings. Also
measured, to choose the method: ``generate`` at the sampler's batch size with a dynamic and
with a static KV cache. Run on the embedded SmolLM2-135M-Instruct (heavy: use flock):

    flock /tmp/bayesrm-heavy.lock python benchmarks/generation_throughput.py [--quick]
"""

from __future__ import annotations

import argparse
import time

import torch

from bayesrm.data.prompts import chitchat_prompts
from bayesrm.generation import PolicySampler, SamplingConfig
from bayesrm.models.policy import load_policy


def generated_tokens(new: torch.Tensor, eos: int) -> int:
    """Tokens actually generated per row of [B, T] new ids: up to and including the first EOS."""
    is_eos = new == eos  # [B, T]
    first = torch.where(is_eos.any(-1), is_eos.float().argmax(-1) + 1, torch.full_like(is_eos[:, 0], new.shape[1], dtype=torch.long))
    return int(first.sum())


def generate_loop(model, tok, prompts: list[str], batch: int, cfg: SamplingConfig, **kwargs) -> tuple[int, float]:
    """(tokens, seconds) of sampling every prompt in ``prompts`` with model.generate, ``batch`` rows at a time."""
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True) for p in prompts]
    tokens, seconds = 0, 0.0
    for start in range(0, len(texts), batch):
        enc = tok(texts[start : start + batch], return_tensors="pt", padding=True, add_special_tokens=False)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                **enc, do_sample=True, temperature=cfg.temperature, top_k=0, top_p=1.0,
                max_new_tokens=cfg.max_new_tokens, pad_token_id=tok.pad_token_id, **kwargs,
            )
        seconds += time.perf_counter() - t0
        tokens += generated_tokens(out[:, enc["input_ids"].shape[1] :], tok.eos_token_id)
    return tokens, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples per measurement (noisier)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model, tok = load_policy("smollm2")
    cfg = SamplingConfig(max_new_tokens=40, temperature=1.0, batch_size=64)
    n_prompts, n_samples = (4, 16) if args.quick else (8, 16)
    prompts = chitchat_prompts(n_prompts, seed=0)
    rows = [p for p in prompts for _ in range(n_samples)]  # the same work for every method

    sampler = PolicySampler(model, tok, "smollm2", cfg, cache_dir=None)
    sampler.sample(prompts, n_samples, progress=False)
    ours = sampler.stats.tokens_per_second
    print(f"PolicySampler batch {cfg.batch_size}: {sampler.stats.tokens} tokens in {sampler.stats.seconds:.1f} s = {ours:.1f} tok/s")

    # Baselines on a slice of the same rows (rates, so fewer rows suffice for the slow ones).
    baselines: dict[str, tuple[int, float]] = {}
    targets = [f"generate batch {b}" for b in (1, 4, 8)]
    for name, batch, count in zip(targets, (1, 4, 8), (8, 16, 32)):
        count = count // 2 if args.quick else count
        baselines[name] = generate_loop(model, tok, rows[:: n_samples // 2][:count], batch, cfg)
    big = rows[: cfg.batch_size]
    baselines[f"generate batch {cfg.batch_size} (dynamic cache)"] = generate_loop(model, tok, big, cfg.batch_size, cfg)
    baselines[f"generate batch {cfg.batch_size} (static cache)"] = generate_loop(
        model, tok, big, cfg.batch_size, cfg, cache_implementation="static"
    )
    print()
    print(f"{'method':<40}{'tok/s':>8}{'PolicySampler / method':>26}")
    for name, (tokens, seconds) in baselines.items():
        rate = tokens / seconds
        print(f"{name:<40}{rate:>8.1f}{ours / rate:>26.2f}")
    worst = min(ours * baselines[name][1] / baselines[name][0] for name in targets)
    print(f"\ntarget: PolicySampler / generate at batch 1..8 >= 1; worst ratio {worst:.2f} -> {'OK' if worst >= 1 else 'MISSED'}")


if __name__ == "__main__":
    main()
