"""MC dropout (Gal & Ghahramani 2016): dropout kept on at scoring, T stochastic forward passes.

Each pass is one ensemble "member" (``members`` [T, B]); mean and population variance over the
passes give the RewardPrediction, like the other ensembles. Dropout acts through the
``nn.Dropout`` modules of the reward model (the backbone's hidden / attention-output dropout and
LoRA dropout), each set to probability ``dropout``; everything else stays in eval mode.
Scoring is reproducible: pass t uses the generator seeded with ``seed + t`` for every batch order.
``bayesrm train --method mc-dropout`` trains the reward model with the same dropout on (the
backbone's dropout kept, every nn.Dropout at ``dropout``), as Gal & Ghahramani prescribe.

    mc = MCDropout(reward_model, samples=16, dropout=0.1)
    pred = mc.score(prompts, responses)      # mean [B], var [B], members [16, B]
    mc.save_pretrained("mc/")                # config.json + the reward model in mc/reward_model/
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from bayesrm.models.checkpoint import config_from_meta, load_checkpoint, save_checkpoint
from bayesrm.models.reward_model import RewardModel
from bayesrm.models.scoring import score_rewards
from bayesrm.types import Prompt, RewardPrediction

MODEL_SUBDIR = "reward_model"


@dataclass
class MCDropoutConfig:
    samples: int = 16
    """T, the number of stochastic forward passes per input (the 'members')."""
    dropout: float = 0.1
    """Probability set on every nn.Dropout module of the reward model while scoring (and training, with --method mc-dropout)."""
    seed: int = 0
    """Seed of the dropout masks (pass t draws from seed + t)."""

    def __post_init__(self) -> None:
        if not isinstance(self.samples, int) or self.samples < 1:
            raise ValueError(f"samples must be a positive integer, got {self.samples!r}")
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")


def set_dropout(model: nn.Module, p: float) -> list[tuple[nn.Dropout, float]]:
    """Set every nn.Dropout of ``model`` to probability p; returns (module, old p) to restore."""
    saved = [(m, m.p) for m in model.modules() if isinstance(m, nn.Dropout)]
    for m, _ in saved:
        m.p = float(p)
    return saved


class MCDropout(nn.Module):
    """A reward model scored with dropout on: forward returns [T, B]."""

    KIND = "mc_dropout"

    def __init__(self, model: RewardModel, samples: int = 16, dropout: float = 0.1, seed: int = 0):
        super().__init__()
        self.config = MCDropoutConfig(samples=samples, dropout=dropout, seed=seed)
        self.model = model
        self.encoder = model.encoder
        self.dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
        self.eval()  # dropout is switched on inside forward only

    @property
    def device(self) -> torch.device:
        return self.model.device

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask [B, T] -> rewards [samples, B], one row per dropout mask."""
        saved = [(m, m.p, m.training) for m in self.dropouts]
        rows = []
        try:
            for m in self.dropouts:
                m.p = float(self.config.dropout)
                m.train(True)
            for t in range(self.config.samples):
                # A fixed seed per pass and batch: the same inputs get the same masks on a rerun.
                with torch.random.fork_rng(devices=[] if self.device.type == "cpu" else [self.device]):
                    torch.manual_seed(self.config.seed + t)
                    rows.append(self.model(input_ids, attention_mask))  # [B]
        finally:
            for m, p, training in saved:
                m.p = p
                m.train(training)
        return torch.stack(rows)  # [samples, B]

    def score(self, prompts: Sequence[Prompt], responses: Sequence[str], batch_size: int = 32,
              progress: bool = False) -> RewardPrediction:
        """Mean, population variance (ddof=0) and members [samples, B] over the dropout passes."""
        return RewardPrediction.from_members(score_rewards(self, prompts, responses, batch_size, progress))

    # ---- persistence -----------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> None:
        """config.json (the MC settings) and the reward model in ``reward_model/``."""
        meta = {"mc_dropout": asdict(self.config), "reward_model": MODEL_SUBDIR}
        save_checkpoint(directory, self.KIND, meta, {}, self.model.backbone_fingerprint())
        self.model.save_pretrained(Path(directory) / MODEL_SUBDIR)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu", **load_options: Any) -> "MCDropout":
        """Reload; the reward model is always the one inside ``directory`` (load_options go to its loader)."""
        meta, _ = load_checkpoint(directory, cls.KIND)
        where = f"{Path(directory) / 'config.json'}: mc_dropout"
        config = config_from_meta(MCDropoutConfig, meta.get("mc_dropout"), where, exact=True)
        model = RewardModel.from_pretrained(Path(directory) / MODEL_SUBDIR, device=device, **load_options)
        return cls(model, **asdict(config))
