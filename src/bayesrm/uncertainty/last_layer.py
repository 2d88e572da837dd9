"""Last-layer Laplace: a Bayesian linear head on the frozen pooled features of a RewardModel.

Features phi(x, y) [H] come from ``model.features``; the head w [H] (no bias) is the MAP. For the
Bradley-Terry likelihood f_n = w^T d_n, d_n = phi(x, y_w) - phi(x, y_l), p_n = sigmoid(f_n), the
GGN equals the Hessian of the negative log-likelihood and is closed form (dense H x H, float64):

    Sigma = (sum_n p_n (1 - p_n) d_n d_n^T + lambda I)^-1,   reward ~ N(w^T phi, phi^T Sigma phi).

The prior precision lambda is fixed or maximises the Laplace evidence
    log p(D) ~ sum_n log sigmoid(f_n) - lambda/2 ||w||^2 + H/2 log lambda - 1/2 logdet(GGN + lambda I).

    ll = LastLayerLaplace(reward_model, prior_precision=1.0)
    ll.fit(train_pairs)                  # features of both sides, GGN, log-likelihood
    ll.optimize_prior_precision()        # optional: evidence-maximising lambda
    pred = ll.score(prompts, responses)  # mean [B], var [B]
    ll.save_pretrained("ll/")            # config.json + GGN/Sigma tensors + ll/reward_model/
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from bayesrm.data.collator import PreferenceCollator, PreferenceDataset
from bayesrm.data.schema import PreferencePair
from bayesrm.models.checkpoint import CheckpointError, config_from_meta, load_checkpoint, save_checkpoint
from bayesrm.models.reward_model import RewardModel
from bayesrm.models.scoring import score_rewards
from bayesrm.types import Prompt, RewardPrediction
from bayesrm.uncertainty.laplace.evidence import maximize_log_evidence

MODEL_SUBDIR = "reward_model"


@dataclass
class LastLayerConfig:
    prior_precision: float = 1.0
    """lambda of the prior N(0, lambda^-1 I) on the head w; fixed or set by optimize_prior_precision."""

    def __post_init__(self) -> None:
        if not (isinstance(self.prior_precision, (int, float)) and self.prior_precision > 0
                and math.isfinite(self.prior_precision)):
            raise ValueError(f"prior_precision must be a positive number, got {self.prior_precision!r}")
        self.prior_precision = float(self.prior_precision)


class LastLayerLaplace(nn.Module):
    """Laplace posterior over a RewardModel's head; forward returns [2, B] = (mean, var)."""

    KIND = "last_layer_laplace"

    def __init__(self, model: RewardModel, prior_precision: float = 1.0):
        super().__init__()
        self.config = LastLayerConfig(prior_precision=prior_precision)
        self.model = model
        self.encoder = model.encoder
        self.ggn: torch.Tensor | None = None  # [H, H] float64, sum_n p_n (1 - p_n) d_n d_n^T
        self.log_likelihood: float = float("nan")  # sum_n log sigmoid(f_n) at w_MAP
        self.n_data: int = 0
        self.covariance: torch.Tensor | None = None  # [H, H] float64, Sigma
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def prior_precision(self) -> float:
        return self.config.prior_precision

    def head_weight(self) -> torch.Tensor:
        """[H] w_MAP in float64."""
        return self.model.head.weight.detach().reshape(-1).double()

    def precision(self) -> torch.Tensor:
        """[H, H] GGN + lambda I (float64)."""
        self._check_fitted()
        eye = torch.eye(self.ggn.shape[0], dtype=torch.float64, device=self.ggn.device)
        return self.ggn + self.prior_precision * eye

    def _check_fitted(self) -> None:
        if self.ggn is None:
            raise RuntimeError("the posterior is not fitted; call fit(pairs) first")

    def _refresh_covariance(self) -> None:
        self.covariance = torch.cholesky_inverse(torch.linalg.cholesky(self.precision()))  # [H, H]

    # ---- fitting ---------------------------------------------------------------------------
    @torch.no_grad()
    def pair_differences(self, pairs: Sequence[PreferencePair], batch_size: int = 32,
                         progress: bool = False) -> torch.Tensor:
        """d_n = phi(x, y_w) - phi(x, y_l) for every pair, [N, H] float64 (model in eval mode)."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        was_training = self.model.training
        self.model.eval()
        try:
            loader = DataLoader(PreferenceDataset(pairs, self.encoder), batch_size=batch_size,
                                collate_fn=PreferenceCollator(self.encoder))
            rows = []
            for batch in tqdm(loader, desc="last-layer features", disable=not progress, unit="batch"):
                feats = self.model.features(batch["input_ids"].to(self.device),
                                            batch["attention_mask"].to(self.device)).double()  # [2B, H]
                b = feats.shape[0] // 2
                rows.append((feats[:b] - feats[b:]).cpu())  # [B, H]
        finally:
            self.model.train(was_training)
        if not rows:
            raise ValueError("fit needs at least one preference pair")
        return torch.cat(rows)  # [N, H]

    def fit(self, pairs: Sequence[PreferencePair], batch_size: int = 32, progress: bool = False) -> "LastLayerLaplace":
        """Closed-form GGN and log-likelihood of the BT head at w_MAP over ``pairs``."""
        d = self.pair_differences(pairs, batch_size, progress)  # [N, H]
        f = d @ self.head_weight().cpu()  # [N]
        p = torch.sigmoid(f)  # [N]
        self.ggn = (d * (p * (1 - p)).unsqueeze(1)).T @ d  # [H, H]
        self.log_likelihood = float(F.logsigmoid(f).sum())
        self.n_data = int(d.shape[0])
        self._refresh_covariance()
        return self

    # ---- prior precision -------------------------------------------------------------------
    def log_evidence(self, prior_precision: float | None = None) -> float:
        """Laplace log marginal likelihood at lambda (default: the current one)."""
        self._check_fitted()
        lam = self.prior_precision if prior_precision is None else float(prior_precision)
        eig = torch.linalg.eigvalsh(self.ggn).clamp_min(0.0)  # [H]
        return self._evidence(lam, eig, float(self.head_weight().square().sum()))

    def _evidence(self, lam: float, eig: torch.Tensor, w_sq: float) -> float:
        h = eig.numel()
        return (self.log_likelihood - 0.5 * lam * w_sq + 0.5 * h * math.log(lam)
                - 0.5 * float(torch.log(eig + lam).sum()))

    def optimize_prior_precision(self, log10_range: tuple[float, float] = (-4.0, 6.0),
                                 grid_points: int = 41) -> float:
        """Set lambda to the evidence maximiser (grid + golden section on log10 lambda); returns it."""
        self._check_fitted()
        eig = torch.linalg.eigvalsh(self.ggn).clamp_min(0.0)  # [H]
        w_sq = float(self.head_weight().square().sum())
        lam, _ = maximize_log_evidence(lambda x: self._evidence(x, eig, w_sq), log10_range, grid_points)
        self.config = LastLayerConfig(prior_precision=lam)
        self._refresh_covariance()
        return lam

    # ---- scoring ---------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask [B, T] -> [2, B]: row 0 the mean w^T phi, row 1 phi^T Sigma phi."""
        if self.covariance is None:
            self._check_fitted()
            self._refresh_covariance()
        phi = self.model.features(input_ids, attention_mask).double()  # [B, H]
        mean = phi @ self.head_weight()  # [B]
        var = ((phi @ self.covariance.to(phi.device)) * phi).sum(-1)  # [B]
        return torch.stack([mean, var])  # [2, B]

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str], batch_size: int = 32,
              progress: bool = False) -> RewardPrediction:
        """Mean w_MAP^T phi and variance phi^T Sigma phi of each response's reward."""
        self._check_fitted()
        out = score_rewards(self, prompts, responses, batch_size, progress)  # [2, N]
        return RewardPrediction(mean=out[0], var=out[1].clamp_min(0.0))

    # ---- persistence -----------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        """config.json (lambda, log-likelihood, N), GGN and Sigma tensors, the RM in ``reward_model/``."""
        self._check_fitted()
        meta = {"last_layer_laplace": asdict(self.config), "log_likelihood": self.log_likelihood,
                "n_data": self.n_data, "reward_model": MODEL_SUBDIR}
        tensors = {"ggn": self.ggn, "covariance": self.covariance}
        save_checkpoint(directory, self.KIND, meta, tensors, self.model.backbone_fingerprint())
        self.model.save_pretrained(Path(directory) / MODEL_SUBDIR)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu",
                        **load_options: Any) -> "LastLayerLaplace":
        """Reload; the reward model is always the one inside ``directory`` (load_options go to its loader)."""
        where = Path(directory) / "config.json"
        meta, tensors = load_checkpoint(directory, cls.KIND)
        config = config_from_meta(LastLayerConfig, meta.get("last_layer_laplace"), f"{where}: last_layer_laplace", exact=True)
        model = RewardModel.from_pretrained(Path(directory) / MODEL_SUBDIR, device=device, **load_options)
        hidden = model.head.weight.numel()
        for name in ("ggn", "covariance"):
            t = tensors.get(name)
            if t is None or t.shape != (hidden, hidden) or t.dtype != torch.float64:
                raise CheckpointError(f"{Path(directory) / 'model.safetensors'}: tensor {name!r} missing or not "
                                      f"float64 [{hidden}, {hidden}]")
        out = cls(model, **asdict(config))
        out.ggn, out.covariance = tensors["ggn"], tensors["covariance"]
        ll, n = meta.get("log_likelihood"), meta.get("n_data")
        if not isinstance(ll, (int, float)) or not isinstance(n, int):
            raise CheckpointError(f"{where}: fields 'log_likelihood' / 'n_data' missing or malformed")
        out.log_likelihood, out.n_data = float(ll), n
        return out
