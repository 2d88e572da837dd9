"""Batching preference pairs for training: chosen and rejected in one padded tensor.

Output of :class:`PreferenceCollator` for B pairs:
    input_ids      [2B, T]  rows 0..B-1 are the chosen responses, rows B..2B-1 the rejected ones
    attention_mask [2B, T]
    margin         [B]      only when every pair has a margin
    pair_index     [B]      position of each pair in the dataset (for per-pair weights)
One forward pass over [2B, T] scores both sides, as TRL's RewardTrainer does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from bayesrm.data.encoding import PairEncoder
from bayesrm.data.schema import PreferencePair


class PreferenceDataset(Dataset):
    """Pairs tokenized once up front; items are dicts the collator pads."""

    def __init__(self, pairs: Sequence[PreferencePair], encoder: PairEncoder):
        self.pairs = list(pairs)
        prompts = [p.prompt for p in self.pairs]
        self.chosen = encoder.encode(prompts, [p.chosen for p in self.pairs])
        self.rejected = encoder.encode(prompts, [p.rejected for p in self.pairs])

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"chosen": self.chosen[i], "rejected": self.rejected[i], "margin": self.pairs[i].margin, "index": i}


@dataclass
class PreferenceCollator:
    """Pads tokenized pairs from :class:`PreferenceDataset` into one [2B, T] batch."""

    encoder: PairEncoder

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = self.encoder.pad([it["chosen"] for it in items] + [it["rejected"] for it in items])
        batch["pair_index"] = torch.tensor([it["index"] for it in items], dtype=torch.long)
        margins = [it["margin"] for it in items]
        if all(m is not None for m in margins):
            batch["margin"] = torch.tensor(margins, dtype=torch.float32)
        return batch
