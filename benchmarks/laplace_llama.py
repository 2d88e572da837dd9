"""The Llama-7B-shaped case of laplace_cost.py: memory and time of a Laplace-LoRA fit at d = 4096.

Random weights, Llama-7B block shapes (hidden 4096, MLP 11008, 32 heads), q_proj / v_proj LoRA
(r = 8) on N_BLOCKS blocks, short random token sequences. Measured in one run:

- memory, tracked op by op (TensorMemory, a TorchDispatchMode: exact for CPU tensors; weights
  allocated before a pass are not counted):
  * the curvature's own memory: peak bytes of everything the accumulators allocate (running sums,
    per-pair gradients, merge workspaces, the finished posterior), tracked through a structure
    registered here ("kfac-tracked": K-FAC with every accumulator call inside a TensorMemory);
    this is the "fit memory" of the target (the dense path holds 16 GiB of it at 32 blocks);
  * the whole fit's peak minus a training pass's peak (forward + backward of the BT loss, no
    optimizer) on the same batches: what the fit needs beyond training.
  Both are measured at 1 and 2 blocks and extrapolated linearly to 32 blocks, then divided by the
  LoRA weight bytes of 32 blocks (target <= 4x). With --dense-contrast the dense d x d path is
  measured at 1 block too (slow on CPU: four 4096 x 4096 eigendecompositions).
- time, at 1 block (both sides scale with the depth alike): one BT epoch (forward, backward, AdamW
  step) vs the fit (curvature + evidence-optimal prior) with --subsample (and at fraction 1 with
  --full-fit), interleaved rounds (interleave.py); target <= 0.5x.
"""

from __future__ import annotations

import statistics
import weakref
from typing import Any, Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from bayesrm.models.reward_model import RewardModel, RewardModelConfig
from bayesrm.training.losses import bradley_terry_loss
from bayesrm.uncertainty.laplace import LaplaceLoRA
from bayesrm.uncertainty.laplace.structures import Structure, get_structure, register_structure
from interleave import paired_ratios, run_interleaved, seconds_of

LLAMA_7B = {"hidden_size": 4096, "intermediate_size": 11008, "num_attention_heads": 32}
SMALL = {"hidden_size": 512, "intermediate_size": 1376, "num_attention_heads": 8}


class TensorMemory(TorchDispatchMode):
    """Live and peak bytes of the CPU tensor storages created inside the context."""

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._seen: dict[int, Any] = {}

    def _free(self, key: int, n: int) -> None:
        self._seen.pop(key, None)
        self.live -= n

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                st = t.untyped_storage()
                key, n = st.data_ptr(), st.nbytes()
                if n and key not in self._seen:
                    self._seen[key] = weakref.finalize(st, self._free, key, n)
                    self.live += n
                    self.peak = max(self.peak, self.live)
        return out


def peak_bytes(fn: Callable[[], object]) -> int:
    with TensorMemory() as mem:
        fn()
    return mem.peak


class _TrackedAccumulator:
    """A K-FAC accumulator whose every call runs inside one TensorMemory."""

    def __init__(self, mem: TensorMemory, *args: Any):
        self.mem = mem
        with mem:
            self.acc = get_structure("kfac").accumulator(*args)

    def update(self, *args: Any) -> None:
        with self.mem:
            self.acc.update(*args)

    def all_reduce(self) -> None:
        with self.mem:
            self.acc.all_reduce()

    def finalize(self, *args: Any, **kwargs: Any):
        with self.mem:
            return self.acc.finalize(*args, **kwargs)

    def nbytes(self) -> int:
        return self.acc.nbytes()


CURVATURE_MEMORY = TensorMemory()
register_structure(Structure("kfac-tracked", lambda *a: _TrackedAccumulator(CURVATURE_MEMORY, *a), get_structure("kfac").load))


def curvature_peak(fn: Callable[[], object]) -> int:
    """Peak bytes held by the curvature accumulators (and their result) during fn (a fit with structure 'kfac-tracked')."""
    CURVATURE_MEMORY.peak = CURVATURE_MEMORY.live
    start = CURVATURE_MEMORY.live
    fn()
    return CURVATURE_MEMORY.peak - start


def build(n_blocks: int, shape: dict[str, int], max_length: int, lora_r: int, seed: int = 0) -> RewardModel:
    from transformers import BertTokenizer, LlamaConfig, LlamaModel

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>"] + [f"w{i}" for i in range(193)]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(words)}, do_lower_case=True)
    tok.eos_token = "</s>"
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), num_hidden_layers=n_blocks, num_key_value_heads=shape["num_attention_heads"],
                      max_position_embeddings=max(64, max_length), pad_token_id=tok.pad_token_id, **shape)
    rm_cfg = RewardModelConfig(backbone="random-llama-7b-shape", lora_r=lora_r, max_length=max_length, target_modules=["q_proj", "v_proj"])
    model = RewardModel.from_backbone(rm_cfg, LlamaModel(cfg), tok, is_decoder=True).eval()
    with torch.no_grad():  # a non-zero LoRA B, as after training (peft initialises B = 0)
        for layer in model.lora_modules().values():
            layer.lora_B["default"].weight.normal_(0, 0.02)
    return model


def random_batches(model: RewardModel, n_pairs: int, batch_size: int, length: int, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    vocab = len(model.tokenizer)
    out = []
    for start in range(0, n_pairs, batch_size):
        b = min(batch_size, n_pairs - start)
        ids = torch.randint(7, vocab, (2 * b, length), generator=g)  # [2B, T]
        mask = torch.ones_like(ids)
        mask[b:, : length // 4] = 0  # some left padding on the rejected rows
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def bt_pass(model: RewardModel, batches, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Forward + backward of the BT loss on every batch (+ an optimizer step: one training epoch)."""
    for batch in batches:
        r = model(batch["input_ids"], batch["attention_mask"])  # [2B]
        loss, _ = bradley_terry_loss(r[: r.shape[0] // 2], r[r.shape[0] // 2 :])
        if optimizer is not None:
            optimizer.zero_grad()
        loss.backward()
        if optimizer is not None:
            optimizer.step()
    for p in model.parameters():
        p.grad = None


def lora_bytes(model: RewardModel) -> int:
    return sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "lora_" in n)


def run(args) -> dict[str, Any]:
    shape = SMALL if args.small else LLAMA_7B
    kw = dict(low_rank=args.low_rank, oversample=args.oversample, stream_above=128 if args.small else 1024)
    memory: dict[int, dict[str, int]] = {}
    times: dict[str, list[float]] = {}
    for n_blocks in (1, 2):
        model = build(n_blocks, shape, args.llama_length, args.lora_r)
        batches = random_batches(model, args.llama_pairs, args.llama_batch, args.llama_length)
        row = {"lora_bytes": lora_bytes(model)}
        row["train_pass_peak"] = peak_bytes(lambda: bt_pass(model, batches))
        la = LaplaceLoRA(model, structure="kfac-tracked", **kw)
        row["curvature_peak"] = curvature_peak(lambda: row.update(fit_peak=peak_bytes(lambda: la.fit(batches))))
        row["posterior_bytes"] = la.posterior_nbytes()
        if n_blocks == 1 and args.dense_contrast:
            dense = LaplaceLoRA(model, structure="kfac-tracked", low_rank=args.low_rank, stream_above=None)
            row["dense_curvature_peak"] = curvature_peak(lambda: row.update(dense_fit_peak=peak_bytes(lambda: dense.fit(batches))))
            del dense
        memory[n_blocks] = row
        print(f"llama-shaped, {n_blocks} block(s): {row}", flush=True)
        del la
        if n_blocks == 1:  # time at 1 block (the ratio does not depend on the depth): epoch vs fits, interleaved
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

            def fit(frac: float) -> None:
                la = LaplaceLoRA(model, subsample=frac, **kw).fit(batches)
                la.optimize_prior_precision()
            runs = {"epoch": seconds_of(lambda: bt_pass(model, batches, opt)), "fit_sub": seconds_of(lambda: fit(args.subsample))}
            if args.full_fit:
                runs["fit_full"] = seconds_of(lambda: fit(1.0))
            times = run_interleaved(runs, args.rounds, warmup=args.small)
            print(f"llama-shaped times at 1 block: {times}", flush=True)
            del model, batches, opt
    def at_32(values: dict[int, float]) -> tuple[float, float]:  # (per block, at 32 blocks) from 1 and 2 blocks
        return values[2] - values[1], values[1] + 31 * (values[2] - values[1])

    lora_per_block, lora_32 = at_32({n: r["lora_bytes"] for n, r in memory.items()})
    curv_per_block, curv_32 = at_32({n: r["curvature_peak"] for n, r in memory.items()})
    per_block, extra_32 = at_32({n: r["fit_peak"] - r["train_pass_peak"] for n, r in memory.items()})
    d = shape["hidden_size"]
    keep = min(args.low_rank + args.oversample, d)
    state_32 = 32 * 2 * 2 * (d * keep * 4 + keep * 8)  # 2 modules x 2 streamed factors per block, [d, l] float32
    dense_32 = 32 * 2 * 2 * d * d * 8  # the dense path: [d, d] float64 per large factor

    result = {
        "shape": shape, "lora_r": args.lora_r, "pairs": args.llama_pairs, "batch_size": args.llama_batch, "length": args.llama_length,
        "low_rank": args.low_rank, "oversample": args.oversample, "subsample": args.subsample, "memory": memory,
        "lora_bytes_per_block": lora_per_block, "lora_bytes_32": lora_32,
        "curvature_peak_per_block": curv_per_block, "curvature_peak_32": curv_32, "memory_ratio_32": curv_32 / lora_32,
        "extra_fit_peak_per_block": per_block, "extra_fit_peak_32": extra_32, "extra_ratio_32": extra_32 / lora_32,
        "streamed_state_32": state_32, "dense_state_32": dense_32,
        "times": times, "fit_sub_ratio_rounds": paired_ratios(times["fit_sub"], times["epoch"]),
    }
    if "fit_full" in times:
        result["fit_full_ratio_rounds"] = paired_ratios(times["fit_full"], times["epoch"])
    result["epoch_s"] = statistics.median(times["epoch"])
    return result
