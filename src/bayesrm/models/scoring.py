"""Batched scoring shared by every model whose forward maps token ids to rewards ([B] or [K, B])."""

from __future__ import annotations

from typing import Protocol, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from bayesrm.data.encoding import PairEncoder
from bayesrm.types import Prompt


class _Scorable(Protocol):
    encoder: PairEncoder

    @property
    def device(self) -> torch.device: ...

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor: ...


@torch.inference_mode()
def score_rewards(
    model: _Scorable,
    prompts: Sequence[Prompt],
    responses: Sequence[str],
    batch_size: int = 32,
    progress: bool = False,
) -> torch.Tensor:
    """Rewards [..., N] of N (prompt, response) pairs from a model's forward ([B] or [K, B] per batch).

    Sequences are sorted by length so batches carry little padding; the output keeps input order.
    The model is put in eval mode while scoring and restored afterwards.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    was_training = getattr(model, "training", False)
    if isinstance(model, nn.Module):
        model.eval()
    try:
        encoded = model.encoder.encode(prompts, responses)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        chunks: list[torch.Tensor] = []
        for start in tqdm(range(0, len(order), batch_size), desc="scoring", disable=not progress, unit="batch"):
            batch = model.encoder.pad([encoded[i] for i in order[start : start + batch_size]])
            out = model(batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device))
            chunks.append(out.float().cpu())  # [B] or [K, B]
        if not chunks:
            return torch.zeros(0)
        sorted_rewards = torch.cat(chunks, dim=-1)  # [..., N] in sorted order
        rewards = torch.empty_like(sorted_rewards)
        rewards[..., torch.tensor(order)] = sorted_rewards
        return rewards
    finally:
        if isinstance(model, nn.Module):
            model.train(was_training)
