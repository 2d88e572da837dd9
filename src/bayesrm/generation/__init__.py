"""Policy sampling for best-of-n and RL: seeded large batches (fp32 | bf16), per-token log-probs,
an on-disk cache with resume, the prompting layer, optional vLLM."""

from bayesrm.generation.cache import CacheError, Sample, SampleCache
from bayesrm.generation.decoding import Generation, generate_rows, sample_next, sample_with_logprobs
from bayesrm.generation.precision import resolve_dtype
from bayesrm.generation.prompting import encode_prompt, prompt_key, render_prompt, stop_token_ids
from bayesrm.generation.sampler import PolicySampler, SamplerStats, SamplingConfig

__all__ = [
    "CacheError",
    "Generation",
    "PolicySampler",
    "Sample",
    "SampleCache",
    "SamplerStats",
    "SamplingConfig",
    "encode_prompt",
    "generate_rows",
    "prompt_key",
    "render_prompt",
    "resolve_dtype",
    "sample_next",
    "sample_with_logprobs",
    "stop_token_ids",
]
