"""Nuclear-norm diversity of a LoRA ensemble (UP-RLHF, Zhai et al. 2023, section 3.2, eq. 12).

For every adapted module m, stack the K members' LoRA A matrices [r, d] along the rank axis,
A_m in R^{K r x d}. Homogeneous members give a low-rank A_m; diverse ones a high-rank A_m. The
nuclear norm over the Frobenius norm is a scale-free, differentiable surrogate of that rank:

    D = (1/M) sum_m ||A_m||_* / ||A_m||_F,     1 <= ||A||_* / ||A||_F <= sqrt(rank A)

and the diverse ensemble minimises  loss_BT - lambda * D.
"""

from __future__ import annotations

from typing import Iterable

import torch


def nuclear_frobenius_ratio(a: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """||A||_* / ||A||_F of a matrix [n, d] (differentiable; singular values via torch.linalg.svdvals)."""
    nuclear = torch.linalg.svdvals(a).sum()
    return nuclear / torch.linalg.matrix_norm(a).clamp_min(eps)


def stacked_lora_diversity(lora_a: Iterable[torch.Tensor]) -> torch.Tensor:
    """D over modules, each given as its members' A matrices [K, r, d] (stacked to [K r, d])."""
    ratios = [nuclear_frobenius_ratio(a.reshape(-1, a.shape[-1])) for a in lora_a]  # each A_m: [K r, d]
    if not ratios:
        raise ValueError("no LoRA modules to measure diversity on")
    return torch.stack(ratios).mean()
