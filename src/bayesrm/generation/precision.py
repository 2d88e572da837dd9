"""The numeric precision policy sampling runs in: ``fp32``, ``bf16`` or ``auto``.

``auto`` means bf16 where it is fast and fp32 elsewhere: on a CUDA device, and on CPUs whose
flags (``/proc/cpuinfo``) include ``amx_bf16`` or ``avx512_bf16`` (oneDNN then runs bf16 matmuls
natively, 2-4x the fp32 rate); other CPUs emulate bf16 and are faster in fp32.

bf16 sampling draws from a slightly different distribution than fp32 (weights and activations
rounded to 8 significant bits); ``benchmarks/generation_throughput.py`` measures how far, as the
mean log-prob of the samples under the fp32 model. The resolved dtype is part of the sample
cache key, so bf16 and fp32 samples are never mixed.
"""

from __future__ import annotations

import copy
import functools
import weakref
from pathlib import Path

import torch

DTYPES = ("fp32", "bf16", "auto")
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
_FAST_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def cpu_has_fast_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether the CPU flags include native bf16 matmul support (AMX or AVX-512 BF16)."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:  # not Linux: no way to tell, stay in fp32
        return False
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            return any(f in flags for f in _FAST_BF16_FLAGS)
    return False


def resolve_dtype(dtype: str, device: torch.device | str) -> str:
    """``fp32`` | ``bf16`` for a requested ``fp32`` | ``bf16`` | ``auto`` on ``device``."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype != "auto":
        return dtype
    kind = torch.device(device).type
    if kind == "cuda":
        return "bf16"
    if kind == "cpu":
        return "bf16" if cpu_has_fast_bf16() else "fp32"
    return "fp32"


_CASTS: "weakref.WeakKeyDictionary[torch.nn.Module, tuple[tuple, torch.nn.Module]]" = weakref.WeakKeyDictionary()


def _weights_state(model: torch.nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is replaced (data pointer) or changed in place
    (autograd's version counter, bumped by optimizer steps, ``copy_``, ``load_state_dict``)."""
    return tuple((t.data_ptr(), t._version) for t in [*model.parameters(), *model.buffers()])


def _has_adapters(model: torch.nn.Module) -> bool:
    """Whether the model holds peft adapter layers (peft's ``BaseTunerLayer``; peft not imported)."""
    return any(c.__name__ == "BaseTunerLayer" for m in model.modules() for c in type(m).__mro__)


def model_in_dtype(model: torch.nn.Module, dtype: str, reuse: bool = True) -> torch.nn.Module:
    """``model`` itself when its floating-point weights are already ``dtype``, else a cast copy
    (the caller's model is never changed: it may be trained or scored in fp32 afterwards).

    reuse: keep the last cast copy of each model (one, held while the model lives) and return it
    again while no weight has been replaced or changed in place since (about 0.4 CPU-s saved per
    call for 135M parameters, 5% of a batch of 64 x 32 tokens). Never for models with peft adapter
    layers, whose ``disable_adapter()`` changes the forward without touching a weight."""
    target = TORCH_DTYPES[dtype]
    floats = {p.dtype for p in model.parameters() if p.is_floating_point()}
    if floats <= {target}:
        return model
    if not reuse or _has_adapters(model):  # peft layers: disable_adapter() changes the model, not its weights
        return copy.deepcopy(model).to(target)
    state = (target, model.training, _weights_state(model))
    cached = _CASTS.get(model)
    if cached is not None and cached[0] == state:
        return cached[1]
    _CASTS.pop(model, None)  # free the stale copy before making the new one
    cast = copy.deepcopy(model).to(target)
    _CASTS[model] = (state, cast)
    return cast
