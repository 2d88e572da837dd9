"""Laplace-LoRA: a K-FAC Laplace posterior over a reward model's LoRA weights (and head).

kfac.py       K-FAC factors of the Bradley-Terry GGN, eigendecomposed, low-rank for large factors
jacobians.py  batched per-example gradients from hooked module inputs / output gradients
evidence.py   Laplace log marginal likelihood and the prior-precision search
predictive.py linearised variance J Sigma J^T, posterior samples, probit approximation
posterior.py  LaplaceLoRA (fit, optimize_prior_precision, score, score_pairs, mc_score, save / load)
ensemble.py   LaplaceEnsemble: Laplace on each ensemble member, mixture predictive
"""

from bayesrm.uncertainty.laplace.ensemble import LaplaceEnsemble
from bayesrm.uncertainty.laplace.posterior import LaplaceConfig, LaplaceLoRA

__all__ = ["LaplaceConfig", "LaplaceEnsemble", "LaplaceLoRA"]
