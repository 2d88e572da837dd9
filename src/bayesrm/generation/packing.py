"""Prepacked bf16 weights for the linear layers of a sampling model on CPU (oneDNN).

aten's bf16 ``F.linear`` on CPU hands the weight to oneDNN in its plain layout, and oneDNN
reorders it into its blocked layout inside every call: at a decode step (a few dozen rows) that
reorder is a large part of each matmul. :func:`packed_linears` reorders each weight once
(``torch.ops.mkldnn._reorder_linear_weight``, as inductor's freezing pass does) and runs the
layers on ``torch.ops.mkldnn._linear_pointwise``, the same oneDNN matmul on the prepacked weight:
the outputs are bit-identical to ``F.linear`` (checked for 1-300 rows on SmolLM2's shapes and in
tests/test_sampling_packed.py), so samples and log-probs do not change and no cache key is
needed. On SmolLM2-135M at 64 rows the linear layers take about 15-20% less CPU time (micro-
benchmark in docs/results/benchmarks.md).

Packed copies are kept per module while it lives and its weight is unchanged (data pointer and
autograd version counter), so the reused bf16 copy of a model is packed once (about 0.3 CPU-s for
135M parameters); they double the memory of the packed weights. Only plain ``nn.Linear`` modules
(forward not overridden) with a 2-D bf16 CPU weight are packed; everything else runs as it is.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from typing import Iterator

import torch

_PACKS: "weakref.WeakKeyDictionary[torch.nn.Linear, tuple[tuple[int, int], torch.Tensor]]" = weakref.WeakKeyDictionary()


@functools.lru_cache(maxsize=1)
def packing_available() -> bool:
    """Whether this torch build runs oneDNN bf16 matmuls on this CPU."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without the mkldnn ops
        return False


def _packable(module: torch.nn.Module) -> bool:
    w = getattr(module, "weight", None)
    return (
        isinstance(module, torch.nn.Linear)
        and type(module).forward is torch.nn.Linear.forward  # subclasses (quantised, adapters) keep their own
        and "forward" not in vars(module)
        and isinstance(w, torch.Tensor)
        and w.dim() == 2
        and w.dtype == torch.bfloat16
        and w.device.type == "cpu"
        and not w.is_mkldnn
    )


def _packed_weight(module: torch.nn.Linear) -> torch.Tensor:
    """The oneDNN-layout copy of ``module.weight`` [out, in], made again when the weight has changed."""
    w = module.weight
    state = (w.data_ptr(), w._version)
    cached = _PACKS.get(module)
    if cached is not None and cached[0] == state:
        return cached[1]
    packed = torch.ops.mkldnn._reorder_linear_weight(w.detach(), None)  # [out, in], mkldnn layout
    _PACKS[module] = (state, packed)
    return packed


def _packed_forward(module: torch.nn.Linear, packed: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """x [..., in] -> [..., out], as F.linear(x, weight, bias)."""
    if x.dtype != torch.bfloat16 or x.device.type != "cpu" or torch.is_grad_enabled():
        return torch.nn.functional.linear(x, module.weight, module.bias)
    return torch.ops.mkldnn._linear_pointwise(x, packed, module.bias, "none", [], "")


@contextlib.contextmanager
def packed_linears(model: torch.nn.Module, enabled: bool = True) -> Iterator[torch.nn.Module]:
    """``model`` with its bf16 CPU ``nn.Linear`` layers on prepacked oneDNN weights (when ``enabled``
    and oneDNN bf16 is available); the layers' own forward is restored on leaving. Gradients are
    never taken through a packed layer (it falls back to ``F.linear`` when grad mode is on)."""
    swapped: list[torch.nn.Module] = []
    if enabled and packing_available():
        for module in model.modules():
            if _packable(module):
                module.forward = functools.partial(_packed_forward, module, _packed_weight(module))
                swapped.append(module)
    try:
        yield model
    finally:
        for module in swapped:
            del module.forward
