"""Laplace-LoRA for Bradley-Terry reward models (Yang et al. 2024, "Bayesian Reward Models for LLM
Alignment"; Laplace-LoRA, Yang et al. 2023), in the spirit of laplace-torch's API.

Posterior over phi = the LoRA A and B weights (+ the head with ``include_head``):
    N(phi_MAP, Sigma),  Sigma = (H + lambda I)^-1,  H = K-FAC of the BT GGN (see kfac.py).

    la = LaplaceLoRA(model, include_head=False, low_rank=16, prior_precision=1.0)
    la.fit(train_pairs)                       # or a loader of {input_ids [2B,T], attention_mask [2B,T]}
    la.optimize_prior_precision()             # maximise the Laplace evidence over lambda
    pred = la.score(prompts, responses)       # mean = MAP reward, var = J Sigma J^T
    la.save_pretrained("posterior/")          # reload: LaplaceLoRA.from_pretrained("posterior/")
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from bayesrm.data.collator import PreferenceCollator, PreferenceDataset
from bayesrm.data.schema import PreferencePair
from bayesrm.models.checkpoint import CheckpointError, config_from_meta, confined_path, load_checkpoint, save_checkpoint
from bayesrm.models.reward_model import RewardModel
from bayesrm.types import Prompt, RewardPrediction
from bayesrm.uncertainty.laplace.evidence import log_marginal_likelihood, maximize_log_evidence
from bayesrm.uncertainty.laplace.jacobians import LinearBlock, collect_blocks, forward_backward, per_example_jacobians
from bayesrm.uncertainty.laplace.kfac import KFAC_MODES, EigenFactor, KFACAccumulator, KroneckerBlock
from bayesrm.uncertainty.laplace.predictive import functional_variance, sample_perturbation

logger = logging.getLogger(__name__)

MODEL_SUBDIR = "reward_model"
"""The MAP reward model is saved in this subdirectory of a posterior (itself a loadable RM)."""


@dataclass
class LaplaceConfig:
    """Settings of a Laplace-LoRA posterior (saved in its config.json)."""

    include_head: bool = False
    """Also treat the scalar head (weight and bias) as Bayesian."""
    low_rank: int | None = 16
    """Factors larger than this keep their top-k eigenpairs + one scalar for the rest; None keeps all."""
    prior_precision: float = 1.0
    """lambda of the prior N(0, lambda^-1 I); set by optimize_prior_precision or fixed."""
    kfac: str = "pair"
    """K-FAC factors: 'pair' (per-pair gradients, default) or 'expand' (per token); see kfac.py."""

    def __post_init__(self) -> None:
        if self.kfac not in KFAC_MODES:
            raise ValueError(f"kfac must be one of {KFAC_MODES}, got {self.kfac!r}")
        if self.low_rank is not None and self.low_rank < 1:
            raise ValueError(f"low_rank must be >= 1 or None, got {self.low_rank}")
        if not (self.prior_precision > 0 and math.isfinite(self.prior_precision)):
            raise ValueError(f"prior_precision must be a positive number, got {self.prior_precision}")


PairData = Sequence[PreferencePair] | Iterable[dict[str, torch.Tensor]]


class LaplaceLoRA:
    """K-FAC Laplace posterior over a RewardModel's LoRA weights (+ head); scores like any RewardScorer."""

    KIND = "laplace"

    def __init__(
        self,
        model: RewardModel,
        include_head: bool = False,
        low_rank: int | None = 16,
        prior_precision: float = 1.0,
        kfac: str = "pair",
    ):
        self.model = model
        self.config = LaplaceConfig(include_head, low_rank, float(prior_precision), kfac)
        self.blocks_list: list[LinearBlock] = collect_blocks(model, include_head)
        self.curvature: dict[str, KroneckerBlock] = {}
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
    def _pair_batches(self, data: PairData, batch_size: int) -> Iterator[dict[str, torch.Tensor]]:
        if isinstance(data, Sequence) and (len(data) == 0 or isinstance(data[0], PreferencePair)):
            if len(data) == 0:
                raise ValueError("no preference pairs to fit on")
            pairs = list(data)
            if dist.is_available() and dist.is_initialized():  # each process takes its share
                pairs = pairs[dist.get_rank() :: dist.get_world_size()]
            dataset = PreferenceDataset(pairs, self.model.encoder)
            yield from DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=PreferenceCollator(self.model.encoder))
        else:
            yield from data  # type: ignore[misc]

    def fit(self, data: PairData, batch_size: int = 16, progress: bool = False) -> "LaplaceLoRA":
        """Accumulate the K-FAC factors of the BT GGN over the data (one forward + backward per batch).

        data: a list of PreferencePair, or batches {input_ids [2B, T], attention_mask [2B, T],
        optional margin [B]} with rows 0..B-1 chosen and B..2B-1 rejected (PreferenceCollator).
        Under torch.distributed every process passes its own shard; the sums are all-reduced.
        """
        was_training = self.model.training
        self.model.eval()  # no LoRA dropout
        acc_dtype = torch.float32 if self.device.type == "mps" else torch.float64
        accs = {b.name: KFACAccumulator(*b.shape, mode=self.config.kfac, device=self.device, dtype=acc_dtype) for b in self.blocks_list}
        stats = torch.zeros(2, dtype=acc_dtype, device=self.device)  # [sum log sigmoid(f), n pairs]
        n_batches = math.ceil(len(data) / batch_size) if isinstance(data, Sequence) and data and isinstance(data[0], PreferencePair) else None
        for batch in tqdm(self._pair_batches(data, batch_size), desc="laplace fit", disable=not progress, total=n_batches, unit="batch"):
            ids, mask = batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)
            if ids.shape[0] % 2:
                raise ValueError(f"a pair batch needs an even number of rows (chosen then rejected), got {ids.shape[0]}")
            f, hooked = forward_backward(self.model, self.blocks_list, ids, mask, pairs=True)  # f [B]
            if "margin" in batch:
                f = f - batch["margin"].to(f)
            p = torch.sigmoid(f.to(acc_dtype))
            weights = (p * (1 - p)).sqrt()  # [B]
            stats += torch.stack([F.logsigmoid(f.to(acc_dtype)).sum(), torch.tensor(float(f.shape[0]), dtype=acc_dtype, device=self.device)])
            for name, acc in accs.items():
                acc.update(hooked[name], weights, mask)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(stats)
        for acc in accs.values():
            acc.all_reduce()
        dtype = self.model.head.weight.dtype
        self.curvature = {name: acc.finalize(self.config.low_rank, dtype) for name, acc in accs.items()}
        self.log_likelihood, self.n_data = float(stats[0]), int(stats[1])
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
            for side, factor in (("G", block.G), ("A", block.A)):
                tensors[f"{name}.{side}.vecs"] = factor.vecs
                tensors[f"{name}.{side}.vals"] = factor.vals
                factors[f"{name}.{side}"] = {"rest": factor.rest, "dim": factor.dim}
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
        try:
            for block in la.blocks_list:
                sides = {}
                for side in ("G", "A"):
                    info = meta["factors"][f"{block.name}.{side}"]
                    vecs, vals = tensors[f"{block.name}.{side}.vecs"], tensors[f"{block.name}.{side}.vals"]
                    sides[side] = EigenFactor(vecs, vals, float(info["rest"]), int(info["dim"])).to(device, dtype)
                if (sides["G"].dim, sides["A"].dim) != block.shape:
                    raise CheckpointError(f"{directory}: factors of {block.name} have shape {(sides['G'].dim, sides['A'].dim)}, the model {block.shape}")
                la.curvature[block.name] = KroneckerBlock(G=sides["G"], A=sides["A"])
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
