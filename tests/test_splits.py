"""split_pairs: seeded, deterministic, disjoint, exact sizes, validated fractions."""

from __future__ import annotations

import random

import pytest

from bayesrm.data.schema import PreferencePair
from bayesrm.data.splits import split_counts, split_pairs


def make_pairs(n: int) -> list[PreferencePair]:
    return [PreferencePair(prompt=f"p{i}", chosen=f"c{i}", rejected=f"r{i}", source=f"f:{i + 1}") for i in range(n)]


def test_deterministic_disjoint_and_complete():
    pairs = make_pairs(103)
    random.seed(123)  # global RNG state must not matter
    a = split_pairs(pairs, (0.7, 0.1, 0.2), seed=5)
    random.seed(999)
    b = split_pairs(pairs, (0.7, 0.1, 0.2), seed=5)
    assert a == b
    ids = [[p.source for p in part] for part in (a.train, a.validation, a.test)]
    assert sorted(sum(ids, [])) == sorted(p.source for p in pairs)  # complete, no duplicates
    assert all(set(x).isdisjoint(y) for i, x in enumerate(ids) for y in ids[i + 1:])
    assert a.sizes() == (72, 10, 21)  # 72.1, 10.3, 20.6 -> largest remainder gives the spare one to test
    for part in (a.train, a.validation, a.test):  # each part keeps the original order
        assert part == sorted(part, key=lambda p: int(p.source.split(":")[1]))
    other = split_pairs(pairs, (0.7, 0.1, 0.2), seed=6)
    assert other.test != a.test


def test_default_fractions_and_edge_sizes():
    s = split_pairs(make_pairs(10))
    assert s.sizes() == (8, 0, 2)
    assert split_pairs([], (0.5, 0.25, 0.25)).sizes() == (0, 0, 0)
    assert split_pairs(make_pairs(1), (0.0, 0.0, 1.0)).sizes() == (0, 0, 1)


@pytest.mark.parametrize("n", [0, 1, 2, 7, 10, 33, 101])
@pytest.mark.parametrize("fractions", [(0.8, 0.0, 0.2), (1 / 3, 1 / 3, 1 / 3), (0.6, 0.2, 0.2), (0.05, 0.9, 0.05)])
def test_split_counts_sum_to_n_and_round_closely(n, fractions):
    counts = split_counts(n, fractions)
    assert sum(counts) == n
    assert all(abs(c - n * f) < 1 for c, f in zip(counts, fractions))


@pytest.mark.parametrize("fractions, match", [
    ((0.8, 0.2), "three|\\(train, validation, test\\)"),
    ((0.8, 0.3, 0.2), "sum to 1"),
    ((1.2, -0.2, 0.0), "non-negative"),
    ((float("nan"), 0.5, 0.5), "finite"),
])
def test_bad_fractions(fractions, match):
    with pytest.raises(ValueError, match=match):
        split_pairs(make_pairs(5), fractions)


def test_by_prompt_keeps_prompt_groups_together():
    rng = random.Random(0)
    pairs = []
    for g in range(40):  # 40 prompts with 1..5 pairs each; some prompts are chat-message lists
        prompt = f"p{g}" if g % 3 else [{"role": "user", "content": f"p{g}"}]
        pairs += [PreferencePair(prompt, f"c{g}.{j}", f"r{g}.{j}", source=f"f:{len(pairs) + j + 1}")
                  for j in range(rng.randint(1, 5))]
    s = split_pairs(pairs, (0.6, 0.2, 0.2), seed=3, by_prompt=True)
    assert s == split_pairs(pairs, (0.6, 0.2, 0.2), seed=3, by_prompt=True)
    keys = [{repr(p.prompt) for p in part} for part in (s.train, s.validation, s.test)]
    assert all(keys[i].isdisjoint(keys[j]) for i in range(3) for j in range(i + 1, 3))
    assert sum(s.sizes()) == len(pairs) and len({p.source for part in (s.train, s.validation, s.test) for p in part}) == len(pairs)
    targets = split_counts(len(pairs), (0.6, 0.2, 0.2))
    # each cut lands on the group boundary nearest its target: at most half a group (<= 2.5) away
    assert all(abs(a - b) <= 5 for a, b in zip(s.sizes(), targets))
    # with one pair per prompt it is the plain split
    singles = make_pairs(30)
    assert split_pairs(singles, seed=1, by_prompt=True).sizes() == split_pairs(singles, seed=1).sizes()
