"""Gao et al.'s best-of-n scaling law, fitted to a gold curve.

Gao, Schulman & Hilton (2023) find that the gold reward of best-of-n, relative to the initial
policy, follows R(d) = d (alpha - beta d) with d = sqrt(KL(BoN_n || policy)). alpha is the initial
slope, beta the rate at which over-optimisation bends the curve down; with beta > 0 the curve peaks
at d* = alpha / (2 beta), i.e. at KL* = d*^2, with R* = alpha^2 / (4 beta).

``fit_scaling_law`` fits (alpha, beta) by least squares to a BoNCurve's gold (minus its n = 1 value,
so R(0) = 0) and bootstraps over prompts for intervals on alpha, beta and the peak KL.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from bayesrm.alignment.bon import BoNCurve


@dataclass
class ScalingFit:
    """alpha, beta, peak KL (inf when beta <= 0: no peak) with percentile bootstrap intervals over prompts."""

    alpha: float
    beta: float
    peak_kl: float
    alpha_ci: tuple[float, float]
    beta_ci: tuple[float, float]
    peak_kl_ci: tuple[float, float]
    rmse: float
    """Root mean squared residual of the fit on the mean curve."""

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    def predict(self, kl: torch.Tensor | Sequence[float]) -> torch.Tensor:
        d = torch.as_tensor(kl, dtype=torch.float64).clamp_min(0).sqrt()
        return d * (self.alpha - self.beta * d)


def fit_alpha_beta(kl: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Least-squares (alpha, beta) of gain = d (alpha - beta d), d = sqrt(kl).

    kl [M], gain [..., M] -> [..., 2] (alpha, beta), batched over leading dimensions.
    """
    d = kl.double().clamp_min(0).sqrt()  # [M]
    X = torch.stack([d, -d * d], dim=-1)  # [M, 2]
    pinv = torch.linalg.pinv(X)  # [2, M]
    return gain.double() @ pinv.T  # [..., 2]


def peak_kl(alpha: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """KL at the peak of R(d): (alpha / 2 beta)^2 where beta > 0 and alpha > 0, else inf."""
    out = (alpha / (2 * beta)) ** 2
    return torch.where((beta > 0) & (alpha > 0), out, torch.full_like(out, math.inf))


def fit_scaling_law(curve: BoNCurve, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> ScalingFit:
    """Fit R(d) to ``curve``'s gold relative to n = 1; intervals from a bootstrap over prompts."""
    kl = curve.kl.double()  # [M]
    per_prompt = curve.gold.per_prompt.double()  # [M, P]
    gain = per_prompt - per_prompt[:1]  # [M, P], 0 at n = 1
    mean_gain = gain.mean(-1)  # [M]
    ab = fit_alpha_beta(kl, mean_gain)  # [2]
    resid = mean_gain - (kl.sqrt() * (ab[0] - ab[1] * kl.sqrt()))
    P = gain.shape[-1]
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, P, (n_boot, P), generator=g)  # [B, P]
    boot_gain = gain[:, idx].mean(-1).T  # [B, M]
    boot = fit_alpha_beta(kl, boot_gain)  # [B, 2]
    boot_peak = peak_kl(boot[:, 0], boot[:, 1])  # [B]
    q = torch.tensor([(1 - level) / 2, 1 - (1 - level) / 2], dtype=torch.float64)

    def ci(x: torch.Tensor) -> tuple[float, float]:
        lo, hi = torch.quantile(x, q).tolist() if torch.isfinite(x).all() else _quantile_with_inf(x, q)
        return float(lo), float(hi)

    return ScalingFit(
        alpha=float(ab[0]), beta=float(ab[1]), peak_kl=float(peak_kl(ab[0:1], ab[1:2])[0]),
        alpha_ci=ci(boot[:, 0]), beta_ci=ci(boot[:, 1]), peak_kl_ci=ci(boot_peak),
        rmse=float(resid.pow(2).mean().sqrt()),
    )


def _quantile_with_inf(x: torch.Tensor, q: torch.Tensor) -> list[float]:
    """Quantiles of a sample that may hold +inf (no peak in that resample): inf sorts last."""
    s = torch.sort(x).values
    pos = (q * (len(s) - 1)).round().long()
    return [float(s[i]) for i in pos]


def scaling_table(curves: dict[str, BoNCurve], n_boot: int = 1000, seed: int = 0) -> tuple[list[str], dict[str, ScalingFit]]:
    """Markdown table lines and the fits of several curves (name -> curve)."""
    fits = {name: fit_scaling_law(c, n_boot=n_boot, seed=seed) for name, c in curves.items()}
    lines = ["| proxy / reward | alpha [95%] | beta [95%] | peak KL (nats) [95%] | rmse |", "|---|---|---|---|---|"]
    for name, f in fits.items():
        lines.append(f"| {name} | {f.alpha:.3f} [{f.alpha_ci[0]:.3f}, {f.alpha_ci[1]:.3f}] | {f.beta:.3f} "
                     f"[{f.beta_ci[0]:.3f}, {f.beta_ci[1]:.3f}] | {_kl(f.peak_kl)} [{_kl(f.peak_kl_ci[0])}, {_kl(f.peak_kl_ci[1])}] "
                     f"| {f.rmse:.3f} |")
    return lines, fits


def _kl(x: float) -> str:
    return "none" if math.isinf(x) else f"{x:.2f}"
