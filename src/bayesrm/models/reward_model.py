"""A Bradley-Terry reward model: Hugging Face backbone + LoRA (peft) + pooling + scalar head.

r(x, y) = w^T pool(h(x, y)), with h the backbone's last hidden states. Pooling is the last
non-pad token for decoders and the mean (or CLS) for encoders.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Literal, Any, Sequence

import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from bayesrm.data.encoding import PairEncoder
from bayesrm.models import backbones
from bayesrm.models.checkpoint import CheckpointError, config_from_meta, load_checkpoint, save_checkpoint
from bayesrm.models.scoring import score_rewards
from bayesrm.types import Prompt, RewardPrediction

POOLINGS = ("auto", "last", "cls", "mean")


@dataclass
class RewardModelConfig:
    """Everything needed to rebuild a reward model around its saved weights."""

    backbone: str = backbones.DEFAULT_BACKBONE
    """Local directory, cached Hub id, or the embedded alias 'minilm' (all-MiniLM-L6-v2)."""
    pooling: str = "auto"
    """auto | last | cls | mean. auto: last non-pad token for decoders, mean for encoders."""
    max_length: int = 256
    """Token budget per (prompt, response); the prompt is trimmed from the left to fit."""
    lora_r: int = 8
    """LoRA rank; 0 trains the head only (frozen backbone)."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator: the update is (alpha / r) B A."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input."""
    target_modules: list[str] | Literal["all-linear"] | None = None
    """Module names to adapt, or peft's "all-linear"; None uses peft's default for the architecture (e.g. query/value)."""
    lora_layers: list[int] | None = None
    """Indices of the transformer blocks to adapt; None adapts every block."""
    disable_dropout: bool = True
    """Turn off the backbone's dropout (as TRL's RewardTrainer does): rewards stay deterministic in training."""
    train_backbone: bool = False
    """Also train (and save) every backbone weight. Off: only LoRA and head are trained and saved."""
    trust_remote_code: bool = False
    """Passed to transformers when building a model; off by default, never needed for the embedded models.
    Loading a saved model ignores the saved value: the caller of ``from_pretrained`` / ``load_scorer`` decides."""

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.lora_r < 0:
            raise ValueError(f"lora_r must be >= 0, got {self.lora_r}")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "reward-model config") -> "RewardModelConfig":
        """From a saved checkpoint's ``model`` section: unknown keys and wrong types are CheckpointErrors naming ``where``."""
        return config_from_meta(cls, data, where)


def pool_hidden(hidden: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """hidden [B, T, H], attention_mask [B, T] -> pooled [B, H]."""
    if pooling == "cls":
        return hidden[:, 0]
    mask = attention_mask.to(hidden.dtype)
    if pooling == "mean":
        return (hidden * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True).clamp_min(1.0)
    # last non-pad token; works for left or right padding
    positions = torch.arange(hidden.shape[1], device=hidden.device)
    last = (attention_mask * positions).argmax(dim=1)  # [B]
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]


def saved_model_config(meta: dict[str, Any], directory: str | Path, trust_remote_code: bool = False) -> RewardModelConfig:
    """The ``model`` section of a checkpoint's config.json, typed, with the caller's ``trust_remote_code``."""
    path = Path(directory) / "config.json"
    if "model" not in meta:
        raise CheckpointError(f"{path}: field 'model' missing")
    return replace(RewardModelConfig.from_dict(meta["model"], f"{path}: model"), trust_remote_code=trust_remote_code)


class RewardModel(nn.Module):
    """LoRA reward model. Build with :meth:`from_config`, reload with :meth:`from_pretrained`."""

    KIND = "reward_model"

    def __init__(self, config: RewardModelConfig, backbone: nn.Module, tokenizer: Any, is_decoder: bool):
        super().__init__()
        self.config = config
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.is_decoder = is_decoder
        self.pooling = config.pooling if config.pooling != "auto" else ("last" if is_decoder else "mean")
        hidden = backbone.config.hidden_size
        # No bias: Bradley-Terry sees only reward differences, so a bias would get no gradient.
        self.head = nn.Linear(hidden, 1, bias=False)
        nn.init.normal_(self.head.weight, std=hidden**-0.5)
        self.encoder = PairEncoder(tokenizer, max_length=config.max_length, is_decoder=is_decoder)

    # ---- construction ----------------------------------------------------------------------
    @classmethod
    def from_config(cls, config: RewardModelConfig, seed: int | None = None) -> "RewardModel":
        """A fresh model: pretrained backbone, newly initialised LoRA and head (seeded when seed is given)."""
        if seed is not None:
            torch.manual_seed(seed)
        hf_config = backbones.load_config(config.backbone, config.trust_remote_code)
        tokenizer = backbones.load_tokenizer(config.backbone, config.trust_remote_code)
        backbone = backbones.load_backbone(config.backbone, config.trust_remote_code)
        return cls.from_backbone(config, backbone, tokenizer, backbones.is_decoder_config(hf_config))

    @classmethod
    def from_backbone(cls, config: RewardModelConfig, backbone: nn.Module, tokenizer: Any, is_decoder: bool) -> "RewardModel":
        """Wrap an already-built backbone (used by tests with tiny random models)."""
        for p in backbone.parameters():
            p.requires_grad_(config.train_backbone)
        if config.disable_dropout:
            for module in backbone.modules():
                if isinstance(module, nn.Dropout):
                    module.p = 0.0
        if config.lora_r > 0:
            lora = LoraConfig(
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=config.target_modules,
                layers_to_transform=config.lora_layers,
                bias="none",
            )
            backbone = get_peft_model(backbone, lora)
            if config.train_backbone:
                for p in backbone.parameters():
                    p.requires_grad_(True)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        return cls(config, backbone, tokenizer, is_decoder)

    # ---- forward ---------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask [B, T] -> pooled features [B, H]."""
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        return pool_hidden(out.last_hidden_state, attention_mask, self.pooling)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask [B, T] -> rewards [B]."""
        return self.head(self.features(input_ids, attention_mask)).squeeze(-1)

    def lora_modules(self) -> dict[str, nn.Module]:
        """The adapted peft LoRA layers by name (each has lora_A / lora_B linear maps)."""
        return {n: m for n, m in self.named_modules() if hasattr(m, "lora_A") and len(getattr(m, "lora_A", {})) > 0}

    # ---- scoring ---------------------------------------------------------------------------
    def score(
        self,
        prompts: Sequence[Prompt],
        responses: Sequence[str],
        batch_size: int = 32,
        progress: bool = False,
    ) -> RewardPrediction:
        """Rewards of (prompt, response) pairs; var = 0 (a point model). Batched by length, input order kept."""
        return RewardPrediction.point(score_rewards(self, prompts, responses, batch_size, progress))

    # ---- persistence -----------------------------------------------------------------------
    def saved_state_dict(self) -> dict[str, torch.Tensor]:
        """What is saved: LoRA + head, or every weight when the backbone is trained too."""
        state = self.state_dict()
        if self.config.train_backbone:
            return state
        return {k: v for k, v in state.items() if "lora_" in k or k.startswith("head.")}

    def save_pretrained(self, directory: str | Path) -> None:
        """config.json + model.safetensors (safetensors only, never pickle), written atomically."""
        save_checkpoint(directory, self.KIND, {"model": asdict(self.config)}, self.saved_state_dict(), self.backbone_fingerprint())

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str | torch.device = "cpu", *,
        trust_remote_code: bool = False, allow_external_paths: bool = False,
    ) -> "RewardModel":
        """Reload a saved model. ``trust_remote_code`` is the caller's choice (the saved value is ignored):
        with it off, a backbone that needs custom code fails to load instead of running that code."""
        meta, tensors = load_checkpoint(directory, cls.KIND, allow_external_paths)
        config = saved_model_config(meta, directory, trust_remote_code)
        model = cls.from_config(config)
        model.load_saved_state(tensors, directory, meta.get("backbone_fingerprint"))
        return model.to(device)

    def load_saved_state(self, tensors: dict[str, torch.Tensor], source: str | Path, fingerprint: dict | None) -> None:
        """Load saved tensors, with a clear error for a checkpoint that does not fit this model."""
        expected = self.saved_state_dict()
        missing = sorted(set(expected) - set(tensors))
        unexpected = sorted(set(tensors) - set(expected))
        if missing or unexpected:
            raise CheckpointError(
                f"{source}: weights do not match the model its config describes "
                f"(missing {missing[:3]}{'...' if len(missing) > 3 else ''}, "
                f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''})"
            )
        for name, tensor in tensors.items():
            if tensor.shape != expected[name].shape:
                raise CheckpointError(
                    f"{source}: tensor {name} has shape {tuple(tensor.shape)}, the model expects {tuple(expected[name].shape)}"
                )
        if fingerprint is not None and not self.config.train_backbone:
            mine = self.backbone_fingerprint()
            if fingerprint != mine:
                raise CheckpointError(
                    f"{Path(source) / 'config.json'}: saved against a different backbone ({fingerprint}), "
                    f"but {self.config.backbone!r} loads as {mine}"
                )
        self.load_state_dict(tensors, strict=False)

    def backbone_fingerprint(self) -> dict[str, Any]:
        """Identifies the frozen backbone weights, so LoRA weights are never paired with another backbone."""
        emb = self.backbone.get_input_embeddings().weight
        cfg = self.backbone.config
        return {
            "model_type": cfg.model_type,
            "hidden_size": int(cfg.hidden_size),
            "num_layers": int(getattr(cfg, "num_hidden_layers", 0)),
            "vocab_size": int(emb.shape[0]),
            "embedding_checksum": round(float(emb.detach().double().abs().sum()), 3),
        }
