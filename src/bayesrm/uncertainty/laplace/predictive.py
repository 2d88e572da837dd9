"""Predictives of a K-FAC Laplace posterior N(phi_MAP, Sigma), Sigma = (H + lambda I)^-1 block-diagonal.

Linearised (Immer et al. 2021; Laplace-LoRA, Yang et al. 2024):
    r(x) ~ N(r_MAP(x), J(x) Sigma J(x)^T),  J = d r / d phi.
Per linear map with Jacobian matrix M [d_out, d_in] and curvature G (x) A = (Q_G (x) Q_A) diag(h) (.)^T,
    M Sigma M^T = sum_ij (q_Gi^T M q_Aj)^2 / (g_i a_j + lambda),
computed for a whole batch of Jacobians without forming Sigma (:meth:`CurvatureBlock.apply`).
Monte-Carlo: phi = phi_MAP + Sigma^{1/2} z, z ~ N(0, I), rescored with the network itself.
"""

from __future__ import annotations

from typing import Mapping

import torch

from bayesrm.uncertainty.laplace.structures import CurvatureBlock


def functional_variance(
    jacobians: Mapping[str, torch.Tensor],
    blocks: Mapping[str, CurvatureBlock],
    prior_precision: float,
) -> torch.Tensor:
    """[B] J Sigma J^T from per-example Jacobians {block: [B, d_out, d_in]}."""
    total = None
    for name, J in jacobians.items():
        block = blocks[name]
        J = J.to(block.dtype)
        SJ = block.apply(J, lambda h: 1.0 / (h + prior_precision))  # [B, d_out, d_in]
        v = (J * SJ).sum((-2, -1))  # [B]
        total = v if total is None else total + v
    assert total is not None, "no blocks"
    return total.clamp_min(0.0)


def sample_perturbation(
    block: CurvatureBlock,
    prior_precision: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """[d_out, d_in] one draw of Sigma^{1/2} z for this block (z standard normal)."""
    z = torch.randn(block.shape, generator=generator, dtype=torch.float64).to(device=block.device, dtype=block.dtype)
    return block.apply(z, lambda h: (h + prior_precision).rsqrt())


def probit_probability(mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """P(f > 0) ~= sigmoid(mu / sqrt(1 + pi var / 8)) for f ~ N(mu, var) (MacKay 1992 probit approximation)."""
    return torch.sigmoid(mean / torch.sqrt(1.0 + torch.pi * var / 8.0))
