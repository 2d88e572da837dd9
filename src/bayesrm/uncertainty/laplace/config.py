"""LaplaceConfig: the settings of a Laplace-LoRA posterior (saved in its config.json, generated as
``bayesrm laplace`` flags; files written before a field existed load with its default)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from bayesrm.config import LEGACY

from bayesrm.uncertainty.laplace.kfac import KFAC_MODES
from bayesrm.uncertainty.laplace.structures import STRUCTURES


@dataclass
class LaplaceConfig:
    """Settings of a Laplace-LoRA posterior (saved in its config.json).

    Fields added after the first release carry a ``LEGACY`` value (bayesrm.config): what posteriors
    fitted before they existed were in effect fitted with, so stage fingerprints of those runs stay valid.
    """

    include_head: bool = False
    """Also treat the scalar head (weight and bias) as Bayesian."""
    low_rank: int | None = 16
    """K-FAC factors larger than this keep their top-k eigenpairs + one scalar for the rest; None keeps all."""
    prior_precision: float = 1.0
    """lambda of the prior N(0, lambda^-1 I); set by optimize_prior_precision or fixed."""
    kfac: str = "pair"
    """K-FAC factors: 'pair' (per-pair gradients, default) or 'expand' (per token); see kfac.py."""
    structure: str = field(default="kfac", metadata={LEGACY: "kfac"})
    """Curvature structure (structures.STRUCTURES): 'kfac' (Kronecker factors per linear map) or 'diag' (exact GGN diagonal)."""
    stream_above: int | None = field(default=1024, metadata={LEGACY: None})
    """K-FAC factors of dimension above this are accumulated low-rank while streaming over the pairs (top low_rank + oversample eigenpairs and the exact trace: O(d k) memory, no d x d matrix); None: always dense."""
    oversample: int = field(default=8, metadata={LEGACY: 8})
    """Extra eigenpairs a streamed factor keeps while accumulating (the top low_rank are kept at the end); more is more accurate, each costs d float32 per factor."""
    subsample: float = field(default=1.0, metadata={LEGACY: 1.0})
    """Curvature from a random subset of the pairs, rescaled to all of them: a fraction in (0, 1], or a whole number of pairs (> 1)."""
    subsample_seed: int = field(default=0, metadata={LEGACY: 0})
    """Seed of the subset drawn by subsample."""

    def __post_init__(self) -> None:
        if self.kfac not in KFAC_MODES:
            raise ValueError(f"kfac must be one of {KFAC_MODES}, got {self.kfac!r}")
        if self.structure not in STRUCTURES:
            raise ValueError(f"structure must be one of {sorted(STRUCTURES)}, got {self.structure!r}")
        if self.structure != "kfac" and self.kfac != "pair":
            raise ValueError(f"kfac={self.kfac!r} applies to structure 'kfac' only, got structure {self.structure!r}")
        if self.low_rank is not None and self.low_rank < 1:
            raise ValueError(f"low_rank must be >= 1 or None, got {self.low_rank}")
        if not (self.prior_precision > 0 and math.isfinite(self.prior_precision)):
            raise ValueError(f"prior_precision must be a positive number, got {self.prior_precision}")
        if self.stream_above is not None and self.stream_above < 1:
            raise ValueError(f"stream_above must be >= 1 or None, got {self.stream_above}")
        if self.oversample < 0:
            raise ValueError(f"oversample must be >= 0, got {self.oversample}")
        s = self.subsample
        if not (math.isfinite(s) and s > 0 and (s <= 1 or float(s).is_integer())):
            raise ValueError(f"subsample must be a fraction in (0, 1] or a whole number of pairs > 1, got {s}")
