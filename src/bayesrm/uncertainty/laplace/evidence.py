"""Laplace log marginal likelihood (evidence) and its maximisation over the prior precision.

With prior N(0, lambda^-1 I) on the P parameters phi and curvature H at phi_MAP (MacKay 1992;
Immer et al. 2021; laplace-torch's ``log_marginal_likelihood``):

    log p(D | lambda) ~= log p(D | phi_MAP) - lambda/2 ||phi_MAP||^2 + P/2 log lambda - 1/2 log det(H + lambda I)

log det(H + lambda I) = sum over the curvature's eigenvalues h of log(h + lambda), from each block's
``eigen_grid()`` (K-FAC: products of the two factors' eigenvalues, with the multiplicities of the
low-rank remainders; diagonal: the diagonal).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from bayesrm.uncertainty.laplace.structures import CurvatureBlock


def logdet_posterior_precision(blocks: Sequence[CurvatureBlock], prior_precision: float) -> float:
    """log det(H + lambda I) with H block-diagonal over the linear maps."""
    total = 0.0
    for block in blocks:
        for vals, mult in block.eigen_grid():
            if mult > 0 and vals.numel():
                total += mult * float(torch.log(vals.double() + prior_precision).sum())
    return total


def log_marginal_likelihood(
    blocks: Sequence[CurvatureBlock],
    log_likelihood: float,
    map_sq_norm: float,
    n_params: int,
    prior_precision: float,
) -> float:
    """Laplace evidence at prior precision lambda (formula in the module docstring)."""
    if prior_precision <= 0:
        raise ValueError(f"prior precision must be positive, got {prior_precision}")
    lam = float(prior_precision)
    return (
        log_likelihood
        - 0.5 * lam * map_sq_norm
        + 0.5 * n_params * math.log(lam)
        - 0.5 * logdet_posterior_precision(blocks, lam)
    )


def maximize_log_evidence(
    objective,
    log10_range: tuple[float, float] = (-4.0, 6.0),
    grid_points: int = 41,
    tol: float = 1e-4,
) -> tuple[float, float]:
    """Maximise objective(lambda) over log10 lambda: a grid, then golden-section search in the
    bracket around the best grid point. Returns (lambda, objective(lambda))."""
    lo, hi = log10_range
    grid = torch.linspace(lo, hi, grid_points, dtype=torch.float64).tolist()
    values = [objective(10.0**x) for x in grid]
    best = max(range(len(grid)), key=lambda i: values[i])
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = objective(10.0**c), objective(10.0**d)
    while b - a > tol:
        if fc > fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = objective(10.0**c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = objective(10.0**d)
    x = (a + b) / 2
    fx = objective(10.0**x)
    if values[best] > fx:  # the optimum sits on the grid edge
        return 10.0 ** grid[best], values[best]
    return 10.0**x, fx
