"""Best-of-n estimator against brute-force enumeration of every subset."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from bayesrm.alignment.bon import (
    BoNCurve,
    bon_curves,
    bon_expectation,
    bon_weights,
    bootstrap_band,
    kl_bon,
    paired_difference,
    satisfies_all,
    tie_broken_order,
)


def brute_force(proxy: torch.Tensor, values: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """[P] average of the value of the subset's best member over all C(N, n) subsets.

    The best member has the largest proxy; ties go to the one that comes later in the same
    seeded random order the estimator uses (its rank in tie_broken_order).
    """
    P, N = proxy.shape
    order = tie_broken_order(proxy, seed)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(N).expand(P, N))  # [P, N]
    out = []
    for p in range(P):
        picks = [max(s, key=lambda j: (proxy[p, j].item(), rank[p, j].item())) for s in itertools.combinations(range(N), n)]
        out.append(sum(values[p, j].item() for j in picks) / len(picks))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 3])
def test_estimator_equals_enumeration_with_ties(seed):
    gen = torch.Generator().manual_seed(seed)
    P, N = 4, 8
    proxy = torch.randint(0, 3, (P, N), generator=gen).float()  # many ties
    gold = torch.randn(P, N, generator=gen)
    est = bon_expectation(proxy, torch.stack([gold, proxy]), range(1, N + 1), seed)  # [2, M, P]
    for n in range(1, N + 1):
        torch.testing.assert_close(est[0, n - 1], brute_force(proxy, gold, n, seed))
        torch.testing.assert_close(est[1, n - 1], brute_force(proxy, proxy, n, seed))


def test_estimator_without_ties_is_plain_argmax_average():
    gen = torch.Generator().manual_seed(1)
    proxy, gold = torch.randn(2, 9, generator=gen), torch.randn(2, 9, generator=gen)
    est = bon_expectation(proxy, gold, [1, 3, 9])
    for m, n in enumerate([1, 3, 9]):
        expected = [
            sum(gold[p, max(s, key=lambda j: proxy[p, j])].item() for s in itertools.combinations(range(9), n))
            / math.comb(9, n)
            for p in range(2)
        ]
        torch.testing.assert_close(est[m], torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(est[0], gold.double().mean(-1))  # n = 1: the policy's own mean
    torch.testing.assert_close(est[2], gold.double().gather(1, proxy.argmax(1, keepdim=True))[:, 0])


def test_tie_break_is_seeded():
    proxy = torch.zeros(3, 10)
    assert torch.equal(tie_broken_order(proxy, 7), tie_broken_order(proxy, 7))
    assert not torch.equal(tie_broken_order(proxy, 7), tie_broken_order(proxy, 8))


def test_weights_match_binomials_and_are_stable():
    w = bon_weights(10, [1, 4, 10])
    expected = torch.tensor(
        [[math.comb(i - 1, n - 1) / math.comb(10, n) if i >= n else 0.0 for i in range(1, 11)] for n in (1, 4, 10)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(w, expected, rtol=1e-12, atol=0)
    ns = [1, 2, 7, 64, 1000, 1024, 2047, 2048]
    big = bon_weights(2048, ns)
    assert torch.isfinite(big).all() and (big >= 0).all()
    torch.testing.assert_close(big.sum(1), torch.ones(len(ns), dtype=torch.float64), rtol=0, atol=1e-9)
    # exact value C(2047, 1023) / C(2048, 1024) = 1024 / 2048 for i = N, n = N / 2
    assert big[ns.index(1024), -1].item() == pytest.approx(0.5, rel=1e-9)
    # a smooth value over many ns: E_n of the ranks 1..N is n (N + 1) / (n + 1)
    ranks = torch.arange(1, 2049, dtype=torch.float64)
    torch.testing.assert_close(big @ ranks, torch.tensor([n * 2049 / (n + 1) for n in ns], dtype=torch.float64))


def test_kl_bon():
    assert kl_bon(1) == 0.0
    assert kl_bon(4) == pytest.approx(math.log(4) - 0.75)
    torch.testing.assert_close(kl_bon([1, 2, 8]), torch.tensor([0.0, math.log(2) - 0.5, math.log(8) - 7 / 8], dtype=torch.float64))
    with pytest.raises(ValueError):
        kl_bon(0)


def test_invalid_n_is_a_clear_error():
    with pytest.raises(ValueError, match="n <= N = 4"):
        bon_expectation(torch.zeros(1, 4), torch.zeros(1, 4), [5])


def _synthetic(P=40, N=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    gold = torch.randn(P, N, generator=gen)
    proxy = gold + torch.randn(P, N, generator=gen)
    return proxy, gold


def test_bon_curves_bands_and_determinism():
    proxy, gold = _synthetic()
    sigma = torch.rand(proxy.shape, generator=torch.Generator().manual_seed(2))
    ns = [1, 2, 4, 8, 16]
    c1 = bon_curves(proxy, gold, ns, n_boot=300, seed=5, extra={"sigma": sigma})
    c2 = bon_curves(proxy, gold, ns, n_boot=300, seed=5, extra={"sigma": sigma})
    c3 = bon_curves(proxy, gold, ns, n_boot=300, seed=6, extra={"sigma": sigma})
    for name in ("gold", "proxy", "sigma"):
        band = c1.stats[name]
        assert (band.lo <= band.mean).all() and (band.mean <= band.hi).all() and (band.lo < band.hi).all()
        assert torch.equal(band.lo, c2.stats[name].lo) and torch.equal(band.hi, c2.stats[name].hi)
    assert not torch.equal(c1.gold.lo, c3.gold.lo)
    torch.testing.assert_close(c1.gold.mean, bon_expectation(proxy, gold, ns, 5).mean(-1))
    torch.testing.assert_close(c1.kl, kl_bon(ns))
    assert (c1.proxy.mean.diff() > 0).all()  # the proxy's own value of its pick rises with n
    assert c1.n_prompts == 40 and c1.n_samples == 16
    again = BoNCurve.from_dict(c1.to_dict())
    torch.testing.assert_close(again.gold.hi, c1.gold.hi)
    assert again.ns == ns


def test_bootstrap_band_against_explicit_resampling():
    per_prompt = torch.randn(2, 25, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    lo, hi = bootstrap_band(per_prompt, n_boot=200, seed=3)
    idx = torch.randint(25, (200, 25), generator=torch.Generator().manual_seed(3))
    boots = per_prompt[:, idx].mean(-1)  # [2, 200]
    torch.testing.assert_close(lo, torch.quantile(boots, 0.025, dim=-1))
    torch.testing.assert_close(hi, torch.quantile(boots, 0.975, dim=-1))


def test_selection_score_differs_from_reported_proxy():
    proxy, gold = _synthetic(P=5, N=6)
    select = -proxy  # pick the worst by the proxy
    c = bon_curves(proxy, gold, [6], n_boot=10, select=select)
    torch.testing.assert_close(c.proxy.per_prompt[0], proxy.double().min(-1).values)


def test_probability_all_properties_hold_by_enumeration():
    gen = torch.Generator().manual_seed(4)
    P, N = 3, 7
    proxy = torch.randint(0, 4, (P, N), generator=gen).float()
    g1, g2 = torch.randn(P, N, generator=gen), torch.randn(P, N, generator=gen)
    ok = satisfies_all([g1, g2], [0.0, torch.full((P, 1), -0.5)])
    torch.testing.assert_close(ok, ((g1 >= 0) & (g2 >= -0.5)).double())
    c = bon_curves(proxy, g1 + g2, [1, 3, 7], n_boot=50, seed=1, extra={"p_all": ok})
    for m, n in enumerate([1, 3, 7]):
        torch.testing.assert_close(c.stats["p_all"].per_prompt[m], brute_force(proxy, ok, n, 1))
    assert ((c.stats["p_all"].mean >= 0) & (c.stats["p_all"].mean <= 1)).all()


def test_paired_difference_band():
    proxy, gold = _synthetic(P=30, N=8)
    sigma = torch.rand(proxy.shape, generator=torch.Generator().manual_seed(9))
    base = bon_curves(proxy, gold, [1, 4, 8], n_boot=200, seed=2)
    other = bon_curves(proxy, gold, [1, 4, 8], n_boot=200, seed=2, select=proxy - sigma)
    d = paired_difference(other, base, n_boot=200, seed=2)
    diff = other.gold.per_prompt - base.gold.per_prompt
    torch.testing.assert_close(d.mean, diff.mean(-1))
    lo, hi = bootstrap_band(diff, 200, 2)
    torch.testing.assert_close((d.lo, d.hi), (lo, hi))
    assert abs(d.mean[0]) < 1e-12  # n = 1: both pick a uniformly random sample
    with pytest.raises(ValueError, match="same ns"):
        paired_difference(bon_curves(proxy, gold, [1, 2], n_boot=10), base)


def test_average_over_seeds_pools_per_prompt_estimates():
    from bayesrm.alignment.bon import average_over_seeds, bon_curves

    g = torch.Generator().manual_seed(3)
    gold = torch.randn(6, 8, generator=g, dtype=torch.float64)
    runs = [bon_curves(torch.randn(6, 8, generator=g, dtype=torch.float64), gold, [1, 2, 4, 8], n_boot=200) for _ in range(3)]
    pooled = average_over_seeds(runs, n_boot=200)
    expected = torch.stack([r.stats["gold"].per_prompt for r in runs]).mean(0)  # [M, P]
    assert torch.allclose(pooled.stats["gold"].per_prompt, expected)
    assert torch.allclose(pooled.stats["gold"].mean, expected.mean(-1))
    assert bool((pooled.stats["gold"].lo <= pooled.stats["gold"].mean).all() and (pooled.stats["gold"].mean <= pooled.stats["gold"].hi).all())
    assert pooled.meta["runs"] == 3
    with pytest.raises(ValueError, match="same ns"):
        average_over_seeds([runs[0], bon_curves(torch.randn(6, 8, generator=g), gold, [1, 2], n_boot=50)])
