"""Best-of-n: the unbiased estimator of the expected value of the proxy's pick, and its KL.

From N samples of one prompt, the expected value (gold reward, proxy reward, uncertainty, an
indicator ...) of the sample a proxy picks out of n drawn without replacement is an average over
all C(N, n) subsets. Sorting by the proxy ascending, the i-th smallest (1-based) is the pick of
exactly C(i-1, n-1) subsets, so (Nakano et al. 2021; Gao et al. 2023, "Scaling laws for reward
model overoptimization")

    E_n = sum_{i=n..N} C(i-1, n-1) / C(N, n) * value_(i).

Ties in the proxy are broken by a random order drawn from a fixed seed, which is what a sampler
that picks uniformly among tied maxima does on average. Weights are computed in log space with
lgamma (float64), stable for N in the thousands. KL(BoN_n || policy) = log n - (n - 1) / n
(Stiennon et al. 2020; Beirami et al. 2024 show it is an upper bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import torch

GOLD, PROXY = "gold", "proxy"


def kl_bon(n: int | float | Sequence[int] | torch.Tensor) -> torch.Tensor | float:
    """KL(BoN_n || policy) = log n - (n - 1) / n (0 at n = 1). Returns a float for a scalar input."""
    if isinstance(n, (int, float)):
        if n < 1:
            raise ValueError(f"best-of-n needs n >= 1, got {n}")
        return math.log(n) - (n - 1) / n
    t = torch.as_tensor(n, dtype=torch.float64)
    if (t < 1).any():
        raise ValueError(f"best-of-n needs n >= 1, got {t.min().item()}")
    return t.log() - (t - 1) / t


def _check_ns(ns: Sequence[int], N: int) -> list[int]:
    out = [int(n) for n in ns]
    bad = [n for n in out if not 1 <= n <= N]
    if not out or bad:
        raise ValueError(f"each n must satisfy 1 <= n <= N = {N} (samples per prompt); got {bad or 'no n'}")
    return out


def _log_comb(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """log C(a, b) = lgamma(a+1) - lgamma(b+1) - lgamma(a-b+1), for 0 <= b <= a (clamped elsewhere)."""
    return torch.lgamma(a + 1) - torch.lgamma(b + 1) - torch.lgamma((a - b + 1).clamp_min(1))


def bon_weights(N: int, ns: Sequence[int]) -> torch.Tensor:
    """[M, N] float64 weights w[m, i-1] = C(i-1, n_m-1) / C(N, n_m) for i >= n_m, else 0; rows sum to 1."""
    ns = _check_ns(ns, N)
    i = torch.arange(1, N + 1, dtype=torch.float64)  # [N] 1-based rank in ascending proxy order
    n = torch.tensor(ns, dtype=torch.float64)[:, None]  # [M, 1]
    log_w = _log_comb(i - 1, n - 1) - _log_comb(torch.tensor(float(N), dtype=torch.float64), n)  # [M, N]
    return torch.where(i >= n, log_w.exp(), torch.zeros((), dtype=torch.float64))  # [M, N]


def tie_broken_order(proxy: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """[P, N] indices sorting each row of ``proxy`` ascending, ties in a seeded random order."""
    if proxy.ndim != 2:
        raise ValueError(f"proxy must have shape [P, N] (prompts x samples), got {tuple(proxy.shape)}")
    if torch.isnan(proxy).any():
        raise ValueError("proxy rewards contain NaN")
    gen = torch.Generator().manual_seed(seed)
    perm = torch.rand(proxy.shape, generator=gen, dtype=torch.float64).argsort(-1).to(proxy.device)  # [P, N]
    order = proxy.gather(-1, perm).argsort(dim=-1, stable=True)  # [P, N] stable: random order among ties
    return perm.gather(-1, order)  # [P, N]


def bon_expectation(
    proxy: torch.Tensor, values: torch.Tensor, ns: Sequence[int], seed: int = 0
) -> torch.Tensor:
    """Per-prompt expected value of the best-of-n pick, E_n [..., M, P] (float64).

    proxy:  [P, N] selection score (higher is picked).
    values: [P, N] or [V, P, N] what to average over the pick (gold, proxy, sigma, an indicator).
    """
    if values.shape[-2:] != proxy.shape:
        raise ValueError(f"values {tuple(values.shape)} must end with the proxy's shape {tuple(proxy.shape)}")
    order = tie_broken_order(proxy, seed)  # [P, N]
    sorted_values = values.double().gather(-1, order.expand_as(values))  # [..., P, N]
    weights = bon_weights(proxy.shape[-1], ns).to(sorted_values.device)  # [M, N]
    return torch.einsum("mn,...pn->...mp", weights, sorted_values)  # [..., M, P]


def bootstrap_band(
    per_prompt: torch.Tensor, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile bootstrap over prompts of the mean: (lo [..., M], hi [..., M]) from per_prompt [..., M, P].

    The same resamples (drawn from ``seed``) are used for every row, so bands of different
    statistics and methods with one seed and P are paired.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    P = per_prompt.shape[-1]
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randint(P, (n_boot, P), generator=gen)  # [B, P]
    counts = torch.zeros(n_boot, P, dtype=torch.float64).scatter_add_(1, idx, torch.ones(n_boot, P, dtype=torch.float64))
    boots = per_prompt.double() @ counts.to(per_prompt.device).T / P  # [..., M, B]
    alpha = (1 - level) / 2
    q = torch.tensor([alpha, 1 - alpha], dtype=torch.float64, device=boots.device)
    lo, hi = torch.quantile(boots, q, dim=-1)
    return lo, hi


@dataclass(frozen=True)
class Band:
    """Mean over prompts with a bootstrap band: mean, lo, hi [M]; per_prompt [M, P]."""

    mean: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor
    per_prompt: torch.Tensor

    def to_dict(self) -> dict[str, list]:
        return {k: getattr(self, k).tolist() for k in ("mean", "lo", "hi", "per_prompt")}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Band":
        return cls(**{k: torch.tensor(d[k], dtype=torch.float64) for k in ("mean", "lo", "hi", "per_prompt")})


@dataclass(frozen=True)
class BoNCurve:
    """Best-of-n curve of one selection method: per n, the mean over prompts (and band) of each statistic.

    ``stats`` always has ``gold`` and ``proxy``; extras (e.g. ``sigma``, ``p_all``) as passed.
    """

    ns: list[int]
    kl: torch.Tensor  # [M] float64
    stats: dict[str, Band]
    n_samples: int
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def gold(self) -> Band:
        return self.stats[GOLD]

    @property
    def proxy(self) -> Band:
        return self.stats[PROXY]

    @property
    def n_prompts(self) -> int:
        return self.gold.per_prompt.shape[-1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "ns": list(self.ns),
            "kl": self.kl.tolist(),
            "n_samples": self.n_samples,
            "meta": dict(self.meta),
            "stats": {k: b.to_dict() for k, b in self.stats.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "BoNCurve":
        return cls(
            ns=[int(n) for n in d["ns"]],
            kl=torch.tensor(d["kl"], dtype=torch.float64),
            stats={k: Band.from_dict(b) for k, b in d["stats"].items()},
            n_samples=int(d["n_samples"]),
            meta=dict(d.get("meta", {})),
        )


def bon_curves(
    proxy: torch.Tensor,
    gold: torch.Tensor,
    ns: Sequence[int],
    n_boot: int = 1000,
    seed: int = 0,
    *,
    select: torch.Tensor | None = None,
    extra: Mapping[str, torch.Tensor] | None = None,
    level: float = 0.95,
) -> BoNCurve:
    """Expected gold and proxy reward of best-of-n for each n, with bootstrap bands over prompts.

    proxy:  [P, N] proxy reward of each sample (reported as ``proxy``; also the selection score
            unless ``select`` is given, e.g. select = mu - k sigma while proxy = mu).
    gold:   [P, N] gold reward of each sample.
    extra:  {name: [P, N]} more statistics of the pick (e.g. ``sigma``, an AND indicator).
    seed:   seeds both the tie-breaking and the bootstrap resamples.
    """
    select = proxy if select is None else select
    named = {GOLD: gold, PROXY: proxy, **(extra or {})}
    for name, value in named.items():
        if value.shape != select.shape:
            raise ValueError(f"bon_curves: '{name}' has shape {tuple(value.shape)}, expected {tuple(select.shape)} [P, N]")
    ns = _check_ns(ns, select.shape[-1])
    stacked = torch.stack([v.to(select.device).double() for v in named.values()])  # [V, P, N]
    per_prompt = bon_expectation(select, stacked, ns, seed)  # [V, M, P]
    lo, hi = bootstrap_band(per_prompt, n_boot, seed, level)  # [V, M]
    mean = per_prompt.mean(-1)  # [V, M]
    stats = {
        name: Band(mean[v].cpu(), lo[v].cpu(), hi[v].cpu(), per_prompt[v].cpu()) for v, name in enumerate(named)
    }
    meta = {"n_boot": n_boot, "seed": seed, "level": level}
    return BoNCurve(ns=ns, kl=kl_bon(ns), stats=stats, n_samples=select.shape[-1], meta=meta)  # type: ignore[arg-type]


def average_over_seeds(curves: Sequence[BoNCurve], n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> BoNCurve:
    """One curve from runs with different seeds on the same prompts: each prompt's estimate is
    averaged over the runs, then bands are bootstrapped over prompts as for a single run."""
    if not curves:
        raise ValueError("average_over_seeds needs at least one curve")
    first = curves[0]
    for c in curves[1:]:
        if c.ns != first.ns or c.n_prompts != first.n_prompts or set(c.stats) != set(first.stats):
            raise ValueError("average_over_seeds needs curves with the same ns, prompts and statistics")
    stats = {}
    for name in first.stats:
        per_prompt = torch.stack([c.stats[name].per_prompt.double() for c in curves]).mean(0)  # [M, P]
        lo, hi = bootstrap_band(per_prompt, n_boot, seed, level)
        stats[name] = Band(per_prompt.mean(-1), lo, hi, per_prompt)
    meta = {**first.meta, "n_boot": n_boot, "seed": seed, "level": level, "runs": len(curves)}
    return BoNCurve(ns=first.ns, kl=first.kl, stats=stats, n_samples=first.n_samples, meta=meta)


def paired_difference(
    curve: BoNCurve, baseline: BoNCurve, stat: str = GOLD, n_boot: int = 1000, seed: int = 0, level: float = 0.95
) -> Band:
    """curve - baseline of one statistic per prompt and n, with a paired bootstrap band over prompts.

    Both curves must come from the same prompts and samples (same P, same ns); pairing removes
    the between-prompt variance that dominates each curve's own band.
    """
    if curve.ns != baseline.ns or curve.n_prompts != baseline.n_prompts:
        raise ValueError(
            f"paired_difference needs the same ns and prompts; got ns {curve.ns} vs {baseline.ns}, "
            f"{curve.n_prompts} vs {baseline.n_prompts} prompts"
        )
    diff = curve.stats[stat].per_prompt - baseline.stats[stat].per_prompt  # [M, P]
    lo, hi = bootstrap_band(diff, n_boot, seed, level)
    return Band(diff.mean(-1), lo, hi, diff)


def satisfies_all(
    golds: Sequence[torch.Tensor], thresholds: Sequence[float | torch.Tensor]
) -> torch.Tensor:
    """[P, N] float indicator that every gold property holds: prod_j [gold_j >= t_j].

    Thresholds are numbers or tensors broadcastable to [P, N] (e.g. per-prompt [P, 1]). Pass the
    result as ``extra={"p_all": ...}`` to :func:`bon_curves` to estimate how often the best-of-n
    pick satisfies all properties (the AND of Wang et al. 2024).
    """
    if len(golds) != len(thresholds) or not golds:
        raise ValueError(f"satisfies_all needs one threshold per gold property; got {len(golds)} and {len(thresholds)}")
    ok = torch.ones_like(golds[0], dtype=torch.bool)
    for g, t in zip(golds, thresholds):
        ok &= g >= torch.as_tensor(t, dtype=g.dtype, device=g.device)
    return ok.double()
