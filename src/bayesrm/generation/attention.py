"""A decode-step attention for sampling: one query token per row, grouped-query heads without copies.

At a decode step each row attends with one query token to its whole KV cache. transformers'
``sdpa`` path then runs the CPU flash-attention kernel, which is tuned for long query blocks
(about 40% of a bf16 SmolLM2 decode step on one core), and ``eager`` first copies every key and
value head ``num_key_value_groups`` times (``repeat_kv``). Here the G query heads that share a
key/value head are stacked into one [G, D] block, so a step is two batched matmuls over the
cache as it is: scores [B, Hkv, G, T] = q k^T, softmax in float32 (as ``eager``), out = p v.
Prefill (several query tokens) and training keep ``sdpa``.

:func:`attention_for_sampling` switches a model to it for the duration of sampling; the function
is registered with transformers under the name ``"bayesrm_decode"``, with sdpa's boolean padding
mask. Same arithmetic as ``eager`` up to the order of float operations (max |logit difference|
4e-5 in fp32 on SmolLM2-135M).
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

NAME = "bayesrm_decode"


def decode_attention_forward(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """query [B, H, Q, D], key/value [B, Hkv, T, D], attention_mask bool [B, 1, Q, T] (True = attend)
    or None -> (output [B, Q, H, D], None). Q > 1, dropout in training, sliding windows, attention
    sinks or logit soft-capping: transformers' sdpa function."""
    B, H, Q, D = query.shape
    Hkv = key.shape[1]
    special = any(kwargs.get(k) is not None for k in ("sliding_window", "s_aux", "softcap"))  # windows, sinks, soft-capping
    if Q != 1 or (dropout and module.training) or H % Hkv or special:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs)
    scale = scaling if scaling is not None else D**-0.5
    q = query.reshape(B, Hkv, H // Hkv, D)  # [B, Hkv, G, D]: the query heads of each key/value head
    scores = torch.matmul(q, key.transpose(2, 3)).float() * scale  # [B, Hkv, G, T]
    if attention_mask is not None:
        mask = attention_mask[:, :, -1:, -key.shape[2] :]  # [B, 1, 1, T]
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:
            scores = scores + mask
    probs = scores.softmax(-1).to(value.dtype)  # [B, Hkv, G, T]
    out = torch.matmul(probs, value)  # [B, Hkv, G, D]
    return out.reshape(B, 1, H, D), None


AttentionInterface.register(NAME, decode_attention_forward)
ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


ATTENTIONS = ("grouped", "model")


@contextlib.contextmanager
def attention_for_sampling(model: torch.nn.Module, attention: str) -> Iterator[torch.nn.Module]:
    """``model`` with its decode steps on :func:`decode_attention_forward` (``attention="grouped"``)
    or as it is (``"model"``); the model's own implementation is restored on leaving. Models that do
    not dispatch attention through transformers' AttentionInterface are left as they are."""
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {', '.join(ATTENTIONS)}, got {attention!r}")
    config = getattr(model, "config", None)
    before = getattr(config, "_attn_implementation", None)
    if attention == "model" or before is None or not hasattr(model, "set_attn_implementation"):
        yield model
        return
    model.set_attn_implementation(NAME)
    try:
        yield model
    finally:
        model.set_attn_implementation(before)
