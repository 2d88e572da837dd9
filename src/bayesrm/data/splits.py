"""Seeded, deterministic train / validation / test splits of preference pairs."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Generic, Sequence, TypeVar

import numpy as np

T = TypeVar("T")


@dataclass(frozen=True)
class Splits(Generic[T]):
    """Disjoint parts of one list; each keeps the original order of its items."""

    train: list[T]
    validation: list[T]
    test: list[T]

    def sizes(self) -> tuple[int, int, int]:
        return len(self.train), len(self.validation), len(self.test)


def _prompt_key(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def split_counts(n: int, fractions: Sequence[float]) -> list[int]:
    """Integer sizes summing to n, as close to ``n * fractions`` as possible (largest remainder;
    ties go to the earlier part)."""
    exact = [n * f for f in fractions]
    counts = [math.floor(x) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def split_pairs(
    items: Sequence[T], fractions: Sequence[float] = (0.8, 0.0, 0.2), seed: int = 0, by_prompt: bool = False
) -> Splits[T]:
    """Shuffle ``items`` with a seeded permutation and cut it into (train, validation, test).

    fractions: three non-negative numbers summing to 1. The same items, fractions and seed always
               give the same splits (numpy's PCG64 generator, independent of the global RNG state).
    by_prompt: keep all pairs that share a prompt (``item.prompt``) in the same part, so that no test
               prompt is seen in training. The groups are shuffled and each cut moves to the group
               boundary nearest its target, so part sizes are within one group of the fractions.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != 3:
        raise ValueError(f"fractions must be (train, validation, test), got {len(fractions)} values")
    if any(not math.isfinite(f) or f < 0 for f in fractions):
        raise ValueError(f"fractions must be finite and non-negative, got {fractions}")
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-6):
        raise ValueError(f"fractions must sum to 1, got {fractions} (sum {sum(fractions):.6g})")
    n = len(items)
    rng = np.random.default_rng(seed)
    n_train, n_val, _ = split_counts(n, fractions)
    if by_prompt:
        groups: dict[str, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(_prompt_key(item.prompt), []).append(i)  # type: ignore[attr-defined]
        members = list(groups.values())
        shuffled = [members[g] for g in rng.permutation(len(members))]
        perm = np.array([i for g in shuffled for i in g], dtype=np.int64)
        bounds = np.cumsum([0] + [len(g) for g in shuffled])  # [G + 1] group boundaries in perm
        cuts = [int(bounds[np.argmin(np.abs(bounds - c))]) for c in (n_train, n_train + n_val)]  # nearest
    else:
        perm = rng.permutation(n)
        cuts = [n_train, n_train + n_val]
    parts = np.split(perm, cuts)
    train, validation, test = ([items[i] for i in np.sort(idx)] for idx in parts)
    return Splits(train=train, validation=validation, test=test)
