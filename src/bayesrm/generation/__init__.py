"""Policy sampling for best-of-n: seeded large batches, an on-disk cache with resume, optional vLLM."""

from bayesrm.generation.cache import CacheError, Sample, SampleCache
from bayesrm.generation.decoding import Generation, generate_rows, sample_next
from bayesrm.generation.sampler import PolicySampler, SamplerStats, SamplingConfig

__all__ = [
    "CacheError",
    "Generation",
    "PolicySampler",
    "Sample",
    "SampleCache",
    "SamplerStats",
    "SamplingConfig",
    "generate_rows",
    "sample_next",
]
