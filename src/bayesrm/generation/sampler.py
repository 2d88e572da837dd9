"""Policy sampling for best-of-n: large seeded batches, an on-disk cache, resume after interruption.

Sample ``i`` of prompt ``x`` is drawn from its own random stream, seeded by (seed, x, i): it is
the same whatever else shares its batch and whatever the batch size (up to floating-point
differences of batched matmuls), so a resumed or extended run reproduces an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
from tqdm.auto import tqdm

from bayesrm.generation.attention import ATTENTIONS, attention_for_sampling
from bayesrm.generation.cache import Sample, SampleCache, stable_hash
from bayesrm.generation.decoding import Generation, generate_rows
from bayesrm.generation.packing import packed_linears
from bayesrm.generation.precision import DTYPES, model_in_dtype, resolve_dtype
from bayesrm.generation.prompting import encode_prompt, prompt_key, stop_token_ids
from bayesrm.types import Prompt


@dataclass(frozen=True)
class SamplingConfig:
    """How responses are sampled. Every field but ``batch_size`` is part of the cache key."""

    max_new_tokens: int = 40
    """Longest response in policy tokens; a response stops earlier at an EOS token."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling: keep the most probable tokens whose mass reaches top_p (1 = off)."""
    top_k: int = 0
    """Keep the k most probable tokens (0 = off)."""
    batch_size: int = 64
    """Sequences decoded together; samples of several prompts share a batch. Results do not depend on it."""
    seed: int = 0
    """Base seed; sample i of prompt x uses the stream seeded by (seed, x, i)."""
    dtype: str = "auto"
    """Precision of sampling: fp32 | bf16 | auto (bf16 on CUDA and on CPUs with AMX / AVX-512 BF16, else
    fp32; see bayesrm.generation.precision). The resolved dtype is part of the cache key."""
    attention: str = "grouped"
    """Attention of the decode steps: grouped (bayesrm.generation.attention: the query heads of each
    key/value head as one block, two matmuls over the KV cache, no copies; 5-10% faster per bf16
    step on CPU) | model (the model's own implementation, e.g. sdpa). The same distribution up to
    float rounding; part of the cache key when not ``model``."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}, got {self.attention!r}")

    def cache_settings(self, dtype: str) -> dict[str, Any]:
        """The settings that change what is sampled: everything but batch_size, with the resolved
        ``dtype`` (fp32 | bf16) in place of the requested one. fp32 and attention ``model`` are left
        out of the key, so caches written before these options existed stay valid."""
        settings = asdict(self)
        del settings["batch_size"], settings["dtype"], settings["attention"]
        if dtype != "fp32":
            settings["dtype"] = dtype
        if self.attention != "model":
            settings["attention"] = self.attention
        return settings


@dataclass
class SamplerStats:
    """Work done by a sampler (cumulative over calls): what was generated, not what came from the cache."""

    samples: int = 0
    tokens: int = 0
    batches: int = 0
    seconds: float = 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


class Backend(Protocol):
    """Generates one response per row; row r continues ``prompt_ids[rows[r]]`` with seed ``seeds[r]``."""

    name: str

    def fingerprint(self) -> str: ...

    def generate(
        self, prompt_ids: Sequence[Sequence[int]], rows: Sequence[int], seeds: Sequence[int], config: SamplingConfig
    ) -> list[Generation]: ...


def weights_fingerprint(model: torch.nn.Module) -> str:
    """blake2b over the model config and every parameter and buffer (names, dtypes, shapes, bytes)."""
    h = hashlib.blake2b(digest_size=16)
    config = getattr(model, "config", None)
    if config is not None and hasattr(config, "to_diff_dict"):
        h.update(json.dumps(config.to_diff_dict(), sort_keys=True, default=str).encode())
    for name, tensor in list(model.state_dict().items()):
        flat = tensor.detach().reshape(-1).contiguous().cpu()
        h.update(f"{name}|{flat.dtype}|{tuple(tensor.shape)}".encode())
        if flat.numel():
            h.update(flat.view(torch.uint8).numpy().data)
    return h.hexdigest()


class TransformersBackend:
    """Plain PyTorch + transformers: the KV-cached, prefix-sharing loop of :mod:`decoding`.

    dtype fp32 | bf16: the precision to sample in. A model in another dtype is cast into a copy at
    every call (about 0.4 CPU-s for 135M parameters, ~1% of a batch of 64 x 32 tokens), so samples
    always follow the model as it is then (RL updates, peft's ``disable_adapter()``); the given
    model itself is never changed, and is what the fingerprint describes. In bf16 on CPU the
    linear layers run on prepacked oneDNN weights (:mod:`bayesrm.generation.packing`; the same
    outputs bit for bit).
    """

    name = "transformers"

    def __init__(self, model: torch.nn.Module, eos_ids: Sequence[int], pad_id: int, dtype: str = "fp32"):
        self.model = model
        self.dtype = dtype
        self.eos_ids = list(eos_ids)
        self.pad_id = pad_id

    def fingerprint(self) -> str:
        return weights_fingerprint(self.model)

    def generate(
        self, prompt_ids: Sequence[Sequence[int]], rows: Sequence[int], seeds: Sequence[int], config: SamplingConfig
    ) -> list[Generation]:
        was_training = self.model.training
        self.model.eval()
        try:
            model = model_in_dtype(self.model, self.dtype)
            with attention_for_sampling(model, config.attention), packed_linears(model):
                return generate_rows(
                    model, prompt_ids, rows, seeds, self.eos_ids, self.pad_id,
                    config.max_new_tokens, config.temperature, config.top_k, config.top_p,
                )
        finally:
            self.model.train(was_training)


def sample_seed(seed: int, key: str, index: int) -> int:
    """63-bit seed of sample ``index`` of the prompt with cache key ``key``."""
    digest = hashlib.blake2b(f"{seed}\x00{index}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class PolicySampler:
    """Samples n responses per prompt from a causal LM, caching every sample on disk.

    model: a transformers causal LM (or a ``vllm.LLM``, see :mod:`bayesrm.generation.vllm_backend`).
    model_id: a readable name for the cache directory; the weights fingerprint is added to it, so
    a changed model never reads another's samples (the fingerprint is taken at construction, about
    1 s per 500 MB of weights: build a new sampler after changing the weights, e.g. after an RL
    step). cache_dir None keeps samples in memory only.
    Prompts are rendered with the tokenizer's chat template when it has one. ``self.dtype`` is the
    precision samples are drawn in (config.dtype resolved for the model's device).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        model_id: str,
        config: SamplingConfig | None = None,
        cache_dir: str | Path | None = None,
    ):
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.config = config or SamplingConfig()
        self.stats = SamplerStats()
        if tokenizer.pad_token_id is None and tokenizer.eos_token_id is None:
            raise ValueError(f"{model_id}: the tokenizer has neither a pad nor an eos token")
        self.eos_ids = stop_token_ids(model, tokenizer)
        self.backend = self._make_backend(model)
        settings = {
            **self.config.cache_settings(self.dtype),
            "backend": self.backend.name,
            "chat_template": stable_hash(getattr(tokenizer, "chat_template", None)),
            "eos_ids": self.eos_ids,
        }
        self.cache = (
            SampleCache.for_model(cache_dir, model_id, self.backend.fingerprint(), settings)
            if cache_dir is not None
            else SampleCache(None)
        )

    def _make_backend(self, model: Any) -> Backend:
        from bayesrm.generation import vllm_backend

        if vllm_backend.is_vllm_model(model):
            backend = vllm_backend.VLLMBackend(model, self.model_id)
            self.dtype = backend.dtype  # vLLM's precision is fixed when the LLM is built
            return backend
        self.dtype = resolve_dtype(self.config.dtype, next(model.parameters()).device)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        return TransformersBackend(model, self.eos_ids, pad, self.dtype)

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        """Token ids of a prompt (:func:`~bayesrm.generation.prompting.encode_prompt`: the chat
        template with the generation prompt when the tokenizer has one)."""
        return encode_prompt(self.tokenizer, prompt, chat_template=True)

    def sample_records(self, prompts: Sequence[Prompt], n: int, progress: bool = True) -> list[list[Sample]]:
        """n samples per prompt (text, token count, finished), generating only those not cached."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        keys = [prompt_key(p) for p in prompts]
        by_key = dict(zip(keys, prompts))
        missing = [(k, i) for k in by_key for i in range(n) if (k, i) not in self.cache]
        if missing:
            self._generate(missing, by_key, progress)
        return [[self.cache[(k, i)] for i in range(n)] for k in keys]

    def sample(self, prompts: Sequence[Prompt], n: int, progress: bool = True) -> list[list[str]]:
        """n response texts per prompt ([len(prompts)][n]); identical prompts get identical samples."""
        return [[s.text for s in row] for row in self.sample_records(prompts, n, progress)]

    def generations(self, prompts: Sequence[Prompt], n: int) -> list[list[Generation]]:
        """n generations per prompt with token ids and per-token log-probs (``Generation.logprobs``),
        drawn from the same seeds as :meth:`sample` (so the same responses); never cached."""
        keys = [prompt_key(p) for p in prompts]
        encoded = {k: self.encode_prompt(p) for k, p in zip(keys, prompts)}
        todo = [(k, i) for k in keys for i in range(n)]
        out: list[Generation] = []
        for start in range(0, len(todo), self.config.batch_size):
            chunk = todo[start : start + self.config.batch_size]
            unique = list(dict.fromkeys(k for k, _ in chunk))
            slot = {k: j for j, k in enumerate(unique)}
            out += self.backend.generate([encoded[k] for k in unique], [slot[k] for k, _ in chunk],
                                         [sample_seed(self.config.seed, k, i) for k, i in chunk], self.config)
        return [out[j * n : (j + 1) * n] for j in range(len(prompts))]

    def _generate(self, missing: list[tuple[str, int]], by_key: dict[str, Prompt], progress: bool) -> None:
        encoded = {k: self.encode_prompt(by_key[k]) for k in dict.fromkeys(k for k, _ in missing)}
        # Similar prompt lengths batch together (little padding); a prompt's samples stay adjacent.
        missing = sorted(missing, key=lambda ki: (len(encoded[ki[0]]), ki[0], ki[1]))
        bs = self.config.batch_size
        bar = tqdm(total=len(missing), desc="sampling", unit="sample", disable=not progress)
        try:
            for start in range(0, len(missing), bs):
                chunk = missing[start : start + bs]
                unique = list(dict.fromkeys(k for k, _ in chunk))
                slot = {k: j for j, k in enumerate(unique)}
                t0 = time.perf_counter()
                gens = self.backend.generate(
                    [encoded[k] for k in unique],
                    [slot[k] for k, _ in chunk],
                    [sample_seed(self.config.seed, k, i) for k, i in chunk],
                    self.config,
                )
                elapsed = time.perf_counter() - t0
                samples = [
                    Sample(self.tokenizer.decode(list(g.token_ids), skip_special_tokens=True), len(g.token_ids), g.finished)
                    for g in gens
                ]
                self.cache.add(zip(chunk, samples))
                self.stats.samples += len(chunk)
                self.stats.tokens += sum(len(g.token_ids) + g.finished for g in gens)
                self.stats.batches += 1
                self.stats.seconds += elapsed
                bar.update(len(chunk))
                bar.set_postfix(tok_s=f"{self.stats.tokens_per_second:.0f}")
        finally:
            bar.close()
