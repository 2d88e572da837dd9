"""Laplace-LoRA for Bradley-Terry reward models (Yang et al. 2024, "Bayesian Reward Models for LLM
Alignment"; Laplace-LoRA, Yang et al. 2023), in the spirit of laplace-torch's API.

Posterior over phi = the LoRA A and B weights (+ the head with ``include_head``):
    N(phi_MAP, Sigma),  Sigma = (H + lambda I)^-1,  H = the BT GGN in a structure (structures.py):
    K-FAC (kfac.py, default) or its diagonal (diag.py), from all pairs or a rescaled subsample.

    la = LaplaceLoRA(model, include_head=False, low_rank=16, prior_precision=1.0)
    la.fit(train_pairs)                       # or a loader of {input_ids [2B,T], attention_mask [2B,T]}
    la.optimize_prior_precision()             # maximise the Laplace evidence over lambda
    pred = la.score(prompts, responses)       # mean = MAP reward, var = J Sigma J^T
    la.save_pretrained("posterior/")          # reload: LaplaceLoRA.from_pretrained("posterior/")
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from bayesrm.models.checkpoint import CheckpointError, config_from_meta, confined_path, load_checkpoint, save_checkpoint
from bayesrm.models.reward_model import RewardModel
from bayesrm.types import Prompt, RewardPrediction
from bayesrm.uncertainty.laplace.config import LaplaceConfig
from bayesrm.uncertainty.laplace.evidence import log_marginal_likelihood, maximize_log_evidence
from bayesrm.uncertainty.laplace.fitting import PairData, accumulate_curvature
from bayesrm.uncertainty.laplace.jacobians import LinearBlock, collect_blocks, per_example_jacobians
from bayesrm.uncertainty.laplace.predictive import functional_variance, sample_perturbation
from bayesrm.uncertainty.laplace.structures import CurvatureBlock, get_structure

__all__ = ["LaplaceConfig", "LaplaceLoRA", "PairData"]

logger = logging.getLogger(__name__)

MODEL_SUBDIR = "reward_model"
"""The MAP reward model is saved in this subdirectory of a posterior (itself a loadable RM)."""


class LaplaceLoRA:
    """Laplace posterior (K-FAC or diagonal) over a RewardModel's LoRA weights (+ head); scores like any RewardScorer."""

    KIND = "laplace"

    def __init__(
        self,
        model: RewardModel,
        include_head: bool = False,
        low_rank: int | None = 16,
        prior_precision: float = 1.0,
        kfac: str = "pair",
        *,
        structure: str = "kfac",
        stream_above: int | None = 1024,
        oversample: int = 16,
        subsample: float = 1.0,
        subsample_seed: int = 0,
    ):
        """Settings as LaplaceConfig (documented there)."""
        self.model = model
        self.config = LaplaceConfig(include_head, low_rank, float(prior_precision), kfac, structure, stream_above,
                                    oversample, float(subsample), subsample_seed)
        self.blocks_list: list[LinearBlock] = collect_blocks(model, include_head)
        self.curvature: dict[str, CurvatureBlock] = {}
        self.log_likelihood: float = float("nan")
        self.n_data: int = 0

    # ---- basic properties ------------------------------------------------------------------
    @property
    def prior_precision(self) -> float:
        return self.config.prior_precision

    @prior_precision.setter
    def prior_precision(self, value: float) -> None:
        if not (value > 0 and math.isfinite(value)):
            raise ValueError(f"prior_precision must be a positive number, got {value}")
        self.config.prior_precision = float(value)

    @property
    def n_params(self) -> int:
        """P, the number of parameters in phi."""
        return sum(b.numel for b in self.blocks_list)

    @property
    def device(self) -> torch.device:
        return self.model.device

    def map_vector(self) -> torch.Tensor:
        """[P] phi_MAP, block by block, each in row-major order (bias last column)."""
        return torch.cat([b.weight_matrix().detach().reshape(-1) for b in self.blocks_list])

    def posterior_nbytes(self) -> int:
        """Bytes of the stored curvature (eigenvectors + eigenvalues of all factors)."""
        return sum(c.nbytes() for c in self.curvature.values())

    def _check_fitted(self) -> None:
        if not self.curvature:
            raise RuntimeError("the posterior is not fitted; call fit(pairs) first")

    # ---- fitting ---------------------------------------------------------------------------
    def fit(self, data: PairData, batch_size: int = 16, progress: bool = False) -> "LaplaceLoRA":
        """Accumulate the curvature of the BT GGN over the data (one forward + backward per batch;
        on a subsample of it with ``subsample`` < 1, rescaled to all pairs; see fitting.py).

        data: a list of PreferencePair, or batches {input_ids [2B, T], attention_mask [2B, T],
        optional margin [B]} with rows 0..B-1 chosen and B..2B-1 rejected (PreferenceCollator).
        Under torch.distributed every process passes its own shard; the sums are all-reduced.
        """
        was_training = self.model.training
        self.model.eval()  # no LoRA dropout
        try:
            self.curvature, self.log_likelihood, self.n_data = accumulate_curvature(
                self.model, self.blocks_list, data, self.config, batch_size=batch_size, progress=progress)
        finally:
            self.model.train(was_training)
        return self

    # ---- evidence --------------------------------------------------------------------------
    def log_marginal_likelihood(self, prior_precision: float | None = None) -> float:
        """Laplace log evidence at lambda (default: the current prior precision); see evidence.py."""
        self._check_fitted()
        lam = self.prior_precision if prior_precision is None else prior_precision
        phi = self.map_vector().double()
        return log_marginal_likelihood(
            [self.curvature[b.name] for b in self.blocks_list], self.log_likelihood, float(phi @ phi), self.n_params, lam
        )

    def optimize_prior_precision(self, log10_range: tuple[float, float] = (-4.0, 6.0), grid_points: int = 41) -> float:
        """Set lambda to the maximiser of the log evidence (grid on log10 lambda, then golden section)."""
        self._check_fitted()
        blocks = [self.curvature[b.name] for b in self.blocks_list]
        phi = self.map_vector().double()
        sq, P, ll = float(phi @ phi), self.n_params, self.log_likelihood
        lam, value = maximize_log_evidence(lambda x: log_marginal_likelihood(blocks, ll, sq, P, x), log10_range, grid_points)
        self.prior_precision = lam
        logger.info("Laplace prior precision: lambda = %.4g (log evidence %.4f)", lam, value)
        return lam

    # ---- predictives -----------------------------------------------------------------------
    def predict(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pairs: bool = False) -> RewardPrediction:
        """Linearised predictive of one padded batch: mean = MAP output, var = J Sigma J^T (one
        forward and one backward pass). With ``pairs`` rows are [chosen; rejected] and the output is the margin."""
        self._check_fitted()
        out, jac = per_example_jacobians(self.model, self.blocks_list, input_ids, attention_mask, pairs=pairs)
        var = functional_variance(jac, self.curvature, self.prior_precision)
        return RewardPrediction(mean=out.float().cpu(), var=var.float().cpu())

    def _batched(self, encoded: list[list[int]], batch_size: int, progress: bool, desc: str, pairs: bool = False) -> RewardPrediction:
        """Predict over encoded rows (for pairs: encoded = chosen + rejected) in length-sorted batches."""
        was_training = self.model.training
        self.model.eval()
        n = len(encoded) // 2 if pairs else len(encoded)
        length = (lambda i: max(len(encoded[i]), len(encoded[n + i]))) if pairs else (lambda i: len(encoded[i]))
        order = sorted(range(n), key=length)
        mean, var = torch.empty(n), torch.empty(n)
        for start in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, unit="batch"):
            idx = order[start : start + batch_size]
            rows = [encoded[i] for i in idx] + ([encoded[n + i] for i in idx] if pairs else [])
            batch = self.model.encoder.pad(rows)
            pred = self.predict(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device), pairs=pairs)
            mean[idx], var[idx] = pred.mean, pred.var
        self.model.train(was_training)
        return RewardPrediction(mean=mean, var=var)

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str], batch_size: int = 32, progress: bool = False) -> RewardPrediction:
        """Rewards r(x, y) ~ N(r_MAP, J Sigma J^T) of (prompt, response) pairs, in input order."""
        return self._batched(self.model.encoder.encode(prompts, responses), batch_size, progress, "laplace score")

    def score_pairs(
        self,
        prompts: Sequence[Prompt],
        chosen: Sequence[str],
        rejected: Sequence[str],
        batch_size: int = 32,
        progress: bool = False,
    ) -> RewardPrediction:
        """Margin f = r(x, y_w) - r(x, y_l) ~ N(mu_w - mu_l, (J_w - J_l) Sigma (J_w - J_l)^T), one per pair."""
        if not (len(prompts) == len(chosen) == len(rejected)):
            raise ValueError(f"got {len(prompts)} prompts, {len(chosen)} chosen and {len(rejected)} rejected")
        enc = self.model.encoder
        encoded = enc.encode(prompts, chosen) + enc.encode(prompts, rejected)
        return self._batched(encoded, batch_size, progress, "laplace score pairs", pairs=True)

    @torch.no_grad()
    def mc_score(
        self,
        prompts: Sequence[Prompt],
        responses: Sequence[str],
        n_samples: int = 100,
        batch_size: int = 32,
        seed: int = 0,
        progress: bool = False,
    ) -> RewardPrediction:
        """Monte-Carlo predictive: rescore with phi ~ N(phi_MAP, Sigma) n_samples times (a check of
        the linearised predictive). Returns the mean / population variance over samples and the
        draws as ``members`` [n_samples, B]."""
        self._check_fitted()
        was_training = self.model.training
        self.model.eval()
        enc = self.model.encoder
        encoded = enc.encode(prompts, responses)
        batches = [(list(range(s, min(s + batch_size, len(encoded)))), enc.pad(encoded[s : s + batch_size])) for s in range(0, len(encoded), batch_size)]
        generator = torch.Generator().manual_seed(seed)
        saved = [b.weight_matrix().detach().clone() for b in self.blocks_list]
        draws = torch.empty(n_samples, len(encoded))
        try:
            for s in tqdm(range(n_samples), desc="laplace mc", disable=not progress, unit="sample"):
                for block, w in zip(self.blocks_list, saved):
                    block.add_(w - block.weight_matrix() + sample_perturbation(self.curvature[block.name], self.prior_precision, generator))
                for idx, batch in batches:
                    draws[s, idx] = self.model(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)).float().cpu()
        finally:
            for block, w in zip(self.blocks_list, saved):
                block.add_(w - block.weight_matrix())
            self.model.train(was_training)
        return RewardPrediction.from_members(draws)

    # ---- persistence -----------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        """config.json + model.safetensors (factors), and the MAP reward model in ``reward_model/``."""
        self._check_fitted()
        tensors: dict[str, torch.Tensor] = {}
        factors: dict[str, dict[str, Any]] = {}
        for name, block in self.curvature.items():
            block_tensors, block_meta = block.state(name)
            tensors.update(block_tensors)
            factors.update(block_meta)
        meta = {
            "laplace": asdict(self.config),
            "factors": factors,
            "log_likelihood": self.log_likelihood,
            "n_data": self.n_data,
            "reward_model": MODEL_SUBDIR,
        }
        save_checkpoint(directory, self.KIND, meta, tensors, self.model.backbone_fingerprint(),
                        extra=lambda staging: self.model.save_pretrained(staging / MODEL_SUBDIR))

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str | torch.device = "cpu", *,
        trust_remote_code: bool = False, allow_external_paths: bool = False,
    ) -> "LaplaceLoRA":
        meta, tensors = load_checkpoint(directory, cls.KIND, allow_external_paths)
        config = config_from_meta(LaplaceConfig, meta.get("laplace"), f"{Path(directory) / 'config.json'}: laplace")
        where = f"{Path(directory) / 'config.json'}: field 'reward_model'"
        model_dir = confined_path(directory, meta.get("reward_model", MODEL_SUBDIR), where, allow_external_paths)
        model = RewardModel.from_pretrained(model_dir, device=device, trust_remote_code=trust_remote_code,
                                            allow_external_paths=allow_external_paths)
        la = cls(model, **asdict(config))
        dtype = model.head.weight.dtype
        structure = get_structure(config.structure)
        factors = meta.get("factors")
        try:
            if not isinstance(factors, dict):
                raise TypeError(f"expected an object, got {type(factors).__name__}")
            for block in la.blocks_list:
                curv = structure.load(block.name, tensors, factors).to(device, dtype)
                if curv.shape != block.shape:
                    raise CheckpointError(f"{directory}: factors of {block.name} have shape {curv.shape}, the model {block.shape}")
                la.curvature[block.name] = curv
        except KeyError as err:
            raise CheckpointError(f"{directory}: factors of the posterior are missing {err}") from err
        except (TypeError, ValueError, RuntimeError) as err:
            if isinstance(err, CheckpointError):
                raise
            raise CheckpointError(f"{Path(directory) / 'config.json'}: field 'factors' is malformed ({err})") from err
        try:
            la.log_likelihood, la.n_data = float(meta.get("log_likelihood", float("nan"))), int(meta.get("n_data", 0))
        except (TypeError, ValueError) as err:
            raise CheckpointError(f"{Path(directory) / 'config.json'}: fields 'log_likelihood' / 'n_data' must be numbers ({err})") from err
        return la
