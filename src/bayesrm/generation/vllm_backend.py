"""Optional vLLM backend for :class:`~bayesrm.generation.sampler.PolicySampler` (``pip install vllm``).

Pass a ``vllm.LLM`` as the sampler's model. Each (prompt, sample index) becomes one request with
its own seed, so the cache and resume logic work unchanged. vLLM's kernels differ from PyTorch's,
so its samples are cached apart from the transformers backend's (the backend is in the cache key).
Its precision is the one the ``LLM`` was built with (recorded as the sampler's dtype); it reports no
per-token log-probs (``Generation.logprobs`` is empty).
"""

from __future__ import annotations

import importlib.util
from typing import Any, Sequence

from bayesrm.generation.cache import stable_hash
from bayesrm.generation.decoding import Generation


def is_vllm_model(model: Any) -> bool:
    """True for a ``vllm.LLM`` (without importing vllm when it is not installed)."""
    if importlib.util.find_spec("vllm") is None:
        return False
    from vllm import LLM

    return isinstance(model, LLM)


class VLLMBackend:
    """One seeded vLLM request per row; vLLM batches them itself (continuous batching, prefix caching)."""

    name = "vllm"

    def __init__(self, llm: Any, model_id: str):
        self.llm = llm
        self.model_id = model_id
        dtype = str(getattr(llm.llm_engine.model_config, "dtype", "unknown"))
        self.dtype = {"torch.float32": "fp32", "torch.bfloat16": "bf16"}.get(dtype, dtype.removeprefix("torch."))

    def fingerprint(self) -> str:
        model_config = self.llm.llm_engine.model_config
        return stable_hash([self.model_id, str(model_config.model), str(getattr(model_config, "revision", None))])

    def generate(self, prompt_ids: Sequence[Sequence[int]], rows: Sequence[int], seeds: Sequence[int], config: Any) -> list[Generation]:
        from vllm import SamplingParams

        params = [
            SamplingParams(
                n=1,
                temperature=config.temperature,
                top_p=config.top_p,
                top_k=config.top_k if config.top_k > 0 else -1,
                max_tokens=config.max_new_tokens,
                seed=int(seed % 2**31),
            )
            for seed in seeds
        ]
        requests = [{"prompt_token_ids": list(prompt_ids[r])} for r in rows]
        outputs = self.llm.generate(requests, sampling_params=params, use_tqdm=False)
        eos = self.llm.get_tokenizer().eos_token_id
        result = []
        for out in outputs:
            completion = out.outputs[0]
            ids = list(completion.token_ids)
            finished = completion.finish_reason == "stop"
            if finished and ids and ids[-1] == eos:
                ids = ids[:-1]
            result.append(Generation(tuple(ids), finished))
        return result
