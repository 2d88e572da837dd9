"""Laplace-LoRA: a K-FAC Laplace posterior over a reward model's LoRA weights (and head).

config.py     LaplaceConfig (structure, low rank, streaming, subsample, prior precision)
structures.py the curvature interface and registry: 'kfac' (kfac.py) and 'diag' (diag.py)
kfac.py       K-FAC factors of the Bradley-Terry GGN, eigendecomposed, low-rank for large factors
factors.py    eigendecomposed factors; dense or streamed low-rank (O(d k)) sums of outer products
diag.py       the exact GGN diagonal
fitting.py    the curvature pass over batches of pairs, with subsampling
jacobians.py  batched per-example gradients from hooked module inputs / output gradients
evidence.py   Laplace log marginal likelihood and the prior-precision search
predictive.py linearised variance J Sigma J^T, posterior samples, probit approximation
posterior.py  LaplaceLoRA (fit, optimize_prior_precision, score, score_pairs, mc_score, save / load)
ensemble.py   LaplaceEnsemble: Laplace on each ensemble member, mixture predictive
"""

from bayesrm.uncertainty.laplace.ensemble import LaplaceEnsemble
from bayesrm.uncertainty.laplace.posterior import LaplaceConfig, LaplaceLoRA

__all__ = ["LaplaceConfig", "LaplaceEnsemble", "LaplaceLoRA"]
