"""Gold-labelled preference pairs from policy samples (Gao et al. 2023's synthetic-gold protocol).

For every training prompt, every distinct pair (a, b) of its samples becomes one preference pair,
labelled by Bradley-Terry sampling from the gold rewards:

    P(a preferred to b) = sigmoid((gold_a - gold_b) / T),   then flipped with probability eps.
"""

from __future__ import annotations

import itertools
import math
import random
from typing import Sequence

from bayesrm.data.schema import PreferencePair


def gold_labelled_pairs(
    prompts: Sequence[str],
    samples: Sequence[Sequence[str]],
    gold: Sequence[Sequence[float]],
    temperature: float = 0.25,
    noise: float = 0.0,
    seed: int = 0,
) -> list[PreferencePair]:
    """Pairs for prompts[i] from samples[i] ([n_i] texts) with gold[i] ([n_i] gold rewards).

    ``temperature`` 0 gives hard labels: the gold order itself (pairs with equal gold are skipped), as
    Coste et al. label their synthetic preferences. Identical responses are never paired. ``margin`` is
    left unset: the proxy only sees the label.
    """
    if not temperature >= 0:
        raise ValueError(f"label temperature must be >= 0, got {temperature}")
    if not 0 <= noise < 0.5:
        raise ValueError(f"label noise must be in [0, 0.5), got {noise}")
    rng = random.Random(seed)
    pairs = []
    for i, (prompt, texts, golds) in enumerate(zip(prompts, samples, gold, strict=True)):
        for a, b in itertools.combinations(range(len(texts)), 2):
            if texts[a].strip() == texts[b].strip() or not texts[a].strip() or not texts[b].strip():
                continue
            if temperature == 0:
                if golds[a] == golds[b]:
                    continue
                a_wins = golds[a] > golds[b]
            else:
                p_a = 1.0 / (1.0 + math.exp(-(golds[a] - golds[b]) / temperature))
                a_wins = rng.random() < p_a
            if rng.random() < noise:
                a_wins = not a_wins
            win, lose = (a, b) if a_wins else (b, a)
            pairs.append(PreferencePair(prompt, texts[win], texts[lose], source=f"prompt{i}:{win}>{lose}"))
    return pairs


def label_agreement(pairs: Sequence[PreferencePair], gold_of: dict[tuple[str, str], float]) -> float:
    """Fraction of pairs whose label agrees with the gold order (a measure of label noise)."""
    agree = [gold_of[(p.prompt, p.chosen)] > gold_of[(p.prompt, p.rejected)] for p in pairs
             if gold_of[(p.prompt, p.chosen)] != gold_of[(p.prompt, p.rejected)]]
    return sum(agree) / max(len(agree), 1)
