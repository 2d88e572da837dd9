"""LoRA ensemble: one frozen backbone, K LoRA adapters and K heads, all members in one batched pass.

Member k adapts every targeted linear map W of the adapted blocks as (UP-RLHF eq. 11)

    z_k = W x_k + (alpha / r) B_k A_k x_k,     A_k [r, d_in], B_k [d_out, r].

The batch is laid out member-major, [K*B, T, d] viewed as [K, B, T, d], and each adapted linear
map applies all K deltas with two batched matmuls. Blocks below the lowest adapted one are
frozen and member-independent, so they run once on [B, T] and their output is repeated K times
(``top_layers=L`` adapts only the top L blocks: cost ~ (n - L + K L) / n of one model).

Two-stage ensembles (efficient-ensemble paper) first merge a shared stage-1 LoRA into the
backbone; that LoRA is kept (``base_lora``) and saved, so a reload re-merges it identically.
"""

from __future__ import annotations

import copy
import math
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import torch
from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
from torch import nn

from bayesrm.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from bayesrm.models.reward_model import RewardModel, RewardModelConfig, pool_hidden
from bayesrm.uncertainty.base import EnsembleConfig, ensemble_meta, parse_ensemble_meta
from bayesrm.uncertainty.diversity import stacked_lora_diversity
from bayesrm.uncertainty.heads import SharedBodyEnsemble, install_member_heads

BaseLoRA = dict[str, dict[str, torch.Tensor]]
"""A merged shared LoRA: {module path: {"lora_A" [r, d_in], "lora_B" [d_out, r], "scaling" []}}."""


class BatchedLoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus K LoRA deltas applied to a member-major batch.

    x [K*B, ..., d_in] -> base(x) + (alpha / r) * (x_k A_k^T) B_k^T  [K*B, ..., d_out], rows k*B..(k+1)*B-1 for member k.
    """

    def __init__(
        self, base: nn.Linear, members: int, r: int, alpha: float, dropout: float = 0.0, generator: torch.Generator | None = None
    ):
        super().__init__()
        self.base = base
        self.members, self.r, self.scaling = members, r, alpha / r
        w = base.weight
        lora_a = torch.empty(members, r, base.in_features, dtype=w.dtype)  # drawn on CPU: the generator is a CPU one
        for a in lora_a:  # peft's init, per member: A ~ kaiming-uniform, B = 0
            nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=generator)
        self.lora_A = nn.Parameter(lora_a.to(w.device))
        self.lora_B = nn.Parameter(torch.zeros(members, base.out_features, r, dtype=w.dtype, device=w.device))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] % self.members:
            raise ValueError(f"batch of {x.shape[0]} rows is not a multiple of {self.members} members")
        out = self.base(x)  # [K*B, ..., d_out]
        xs = self.dropout(x).reshape(self.members, -1, x.shape[-1])  # [K, N, d_in]
        delta = (xs @ self.lora_A.mT) @ self.lora_B.mT  # [K, N, r] -> [K, N, d_out]
        return out + self.scaling * delta.reshape(out.shape)

    def extra_repr(self) -> str:
        return f"members={self.members}, r={self.r}, scaling={self.scaling:g}"


# ---- backbone surgery --------------------------------------------------------------------------
def transformer_blocks(backbone: nn.Module) -> tuple[str, nn.ModuleList]:
    """(path, list) of the backbone's transformer blocks: the ModuleList with num_hidden_layers entries."""
    n = getattr(backbone.config, "num_hidden_layers", None)
    for name, module in backbone.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == n:
            return name, module
    raise ValueError(f"cannot find the {n} transformer blocks of {type(backbone).__name__}")


def adapted_layers(num_blocks: int, lora_layers: Sequence[int] | None, top_layers: int | None) -> list[int]:
    """Block indices to adapt: the explicit list, the top L blocks, or all."""
    if lora_layers is not None and top_layers is not None:
        raise ValueError("give either lora_layers (in the reward-model config) or top_layers, not both")
    if top_layers is not None:
        if top_layers > num_blocks:
            raise ValueError(f"top_layers={top_layers} but the backbone has {num_blocks} blocks")
        return list(range(num_blocks - top_layers, num_blocks))
    layers = sorted(set(lora_layers)) if lora_layers is not None else list(range(num_blocks))
    if not layers or layers[0] < 0 or layers[-1] >= num_blocks:
        raise ValueError(f"lora_layers {lora_layers} out of range for {num_blocks} blocks")
    return layers


def default_targets(backbone: nn.Module, target_modules: Sequence[str] | None) -> list[str]:
    """Target module names: the given ones, else peft's default for the architecture."""
    if target_modules:
        return list(target_modules)
    model_type = backbone.config.model_type
    if model_type not in TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING:
        raise ValueError(f"no default LoRA target modules for model type {model_type!r}; set target_modules")
    return list(TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING[model_type])


def target_paths(backbone: nn.Module, blocks_path: str, layers: Sequence[int], targets: Sequence[str]) -> list[str]:
    """Paths of the nn.Linear modules named by ``targets`` (peft's suffix rule) inside the given blocks."""
    prefixes = tuple(f"{blocks_path}.{i}." for i in layers)
    paths = [
        name for name, module in backbone.named_modules()
        if isinstance(module, nn.Linear) and name.startswith(prefixes)
        and any(name == t or name.endswith("." + t) for t in targets)
    ]
    if not paths:
        raise ValueError(f"no nn.Linear named {list(targets)} in blocks {list(layers)}")
    return paths


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


@torch.no_grad()
def merge_lora(backbone: nn.Module, base_lora: BaseLoRA) -> None:
    """W <- W + scaling * B A for every module of a shared LoRA (peft's merge formula)."""
    for path, lora in base_lora.items():
        linear = backbone.get_submodule(path)
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"{path}: not an nn.Linear, cannot merge a LoRA into it")
        delta = (lora["lora_B"] @ lora["lora_A"]) * float(lora["scaling"])  # [d_out, d_in]
        linear.weight += delta.to(linear.weight)


@contextmanager
def broadcast_to_members(blocks: Sequence[nn.Module], members: int, batch: int) -> Iterator[None]:
    """While active, every tensor argument with batch-sized dim 0 entering ``blocks`` is repeated K times.

    The first block receives hidden states [B, T, d] -> [K*B, T, d]; every block's attention mask,
    position embeddings etc. are repeated the same way (once each, memoised), so the stack runs
    on K member-major copies of the batch. Tensors of rank < 2 (e.g. cache positions) are left alone.
    """
    memo: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def expand(x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.ndim >= 2 and x.shape[0] == batch:
            hit = memo.get(id(x))
            if hit is None or hit[0] is not x:
                hit = memo[id(x)] = (x, x.repeat(members, *([1] * (x.ndim - 1))))
            return hit[1]
        if isinstance(x, (tuple, list)):
            return type(x)(expand(v) for v in x)
        return x

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return tuple(expand(a) for a in args), {k: expand(v) for k, v in kwargs.items()}

    handles = [block.register_forward_pre_hook(hook, with_kwargs=True) for block in blocks] if members > 1 else []
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


# ---- the ensemble ------------------------------------------------------------------------------
class LoRAEnsemble(SharedBodyEnsemble, nn.Module):
    """K LoRA members on one frozen backbone, computed in one batched forward pass -> [K, B].

    config:   the reward-model config; lora_r / lora_alpha / lora_dropout / target_modules /
              lora_layers describe each member's LoRA (train_backbone must be off).
    ensemble: members, top_layers, diversity weight, bootstrap, seed.
    base_lora: an optional shared LoRA merged into the backbone first (two-stage ensembles).
    """

    KIND = "lora_ensemble"

    def __init__(self, body: RewardModel, config: RewardModelConfig, ensemble: EnsembleConfig, base_lora: BaseLoRA | None = None):
        super().__init__()
        if config.lora_r < 1:
            raise ValueError("a LoRA ensemble needs lora_r >= 1 (use a head ensemble for a frozen backbone)")
        if config.train_backbone:
            raise ValueError("a LoRA ensemble keeps the backbone frozen; set train_backbone=False")
        self.config, self.ensemble = config, ensemble
        self.body = install_member_heads(body, ensemble)
        backbone = body.backbone
        self.base_lora = {p: {k: v.detach().cpu().clone() for k, v in d.items()} for p, d in (base_lora or {}).items()}
        merge_lora(backbone, self.base_lora)
        self.blocks_path, blocks = transformer_blocks(backbone)
        self.layers = adapted_layers(len(blocks), config.lora_layers, ensemble.top_layers)
        self.targets = default_targets(backbone, config.target_modules)
        self.adapter_paths = target_paths(backbone, self.blocks_path, self.layers, self.targets)
        generator = torch.Generator().manual_seed(ensemble.seed + 1)
        for path in self.adapter_paths:
            base = backbone.get_submodule(path)
            _set_submodule(backbone, path, BatchedLoRALinear(
                base, ensemble.members, config.lora_r, config.lora_alpha, config.lora_dropout, generator
            ))

    @classmethod
    def from_config(
        cls, config: RewardModelConfig, ensemble: EnsembleConfig | None = None, base_lora: BaseLoRA | None = None
    ) -> "LoRAEnsemble":
        ensemble = ensemble or EnsembleConfig()
        body = RewardModel.from_config(replace(config, lora_r=0), seed=ensemble.seed)
        return cls(body, config, ensemble, base_lora)

    @classmethod
    def from_backbone(
        cls, config: RewardModelConfig, backbone: nn.Module, tokenizer: Any, is_decoder: bool,
        ensemble: EnsembleConfig | None = None, base_lora: BaseLoRA | None = None,
    ) -> "LoRAEnsemble":
        body = RewardModel.from_backbone(replace(config, lora_r=0), backbone, tokenizer, is_decoder)
        return cls(body, config, ensemble or EnsembleConfig(), base_lora)

    # ---- forward ---------------------------------------------------------------------------

    def adapters(self) -> dict[str, BatchedLoRALinear]:
        """The batched LoRA layers by module path in the backbone."""
        return {p: self.body.backbone.get_submodule(p) for p in self.adapter_paths}  # type: ignore[misc]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask [B, T] -> member rewards [K, B]."""
        members, batch = self.ensemble.members, input_ids.shape[0]
        blocks = self.body.backbone.get_submodule(self.blocks_path)
        extra = {"use_cache": False} if self.body.is_decoder else {}
        with broadcast_to_members(blocks[self.layers[0]:], members, batch):
            hidden = self.body.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra).last_hidden_state
        pooled = pool_hidden(hidden, attention_mask.repeat(members, 1), self.body.pooling)  # [K*B, H]
        return self.heads(pooled.view(members, batch, -1))  # [K, B]

    # ---- diversity (UP-RLHF eq. 12) ---------------------------------------------------------
    def diversity(self) -> torch.Tensor:
        """D = (1/M) sum_m ||A_m||_* / ||A_m||_F over the adapted modules, A_m the members' stacked A [K r, d]."""
        return stacked_lora_diversity(a.lora_A for a in self.adapters().values())

    def extra_loss(self) -> tuple[torch.Tensor, dict[str, float]]:
        """(-lambda * D, {"diversity": D}); D is only logged (no gradient) when lambda = 0."""
        lam = self.ensemble.diversity
        if lam == 0:
            with torch.no_grad():
                value = self.diversity()
            return torch.zeros((), device=self.device), {"diversity": float(value)}
        value = self.diversity()
        return -lam * value, {"diversity": float(value.detach())}

    # ---- members as standard reward models ---------------------------------------------------
    def bare_backbone(self) -> nn.Module:
        """A copy of the backbone without the ensemble's adapters (stage-1 LoRA merged, if any)."""
        backbone = copy.deepcopy(self.body.backbone)
        for path in self.adapter_paths:
            _set_submodule(backbone, path, backbone.get_submodule(path).base)
        return backbone

    @torch.no_grad()
    def members_as_reward_models(self) -> list[RewardModel]:
        """Each member as a standard peft :class:`RewardModel` that scores identically.

        With a merged stage-1 LoRA the members' backbones differ from the pretrained one, so their
        config has ``train_backbone=True`` (saving keeps the merged weights); their backbone
        weights are still frozen (requires_grad False), only LoRA and head are trainable.
        """
        merged = bool(self.base_lora)
        # exact module paths (not names + layers_to_transform: peft cannot find the blocks of a bare LlamaModel)
        config = replace(self.config, lora_layers=None, target_modules=list(self.adapter_paths), train_backbone=merged)
        out = []
        for k in range(self.ensemble.members):
            model = RewardModel.from_backbone(config, self.bare_backbone(), self.body.tokenizer, self.body.is_decoder)
            peft_layers = {n.removeprefix("backbone.base_model.model."): m for n, m in model.lora_modules().items()}
            if set(peft_layers) != set(self.adapter_paths):
                raise RuntimeError(f"peft adapted {sorted(peft_layers)}, the ensemble {sorted(self.adapter_paths)}")
            for path, mine in self.adapters().items():
                layer = peft_layers[path]
                layer.lora_A["default"].weight.copy_(mine.lora_A[k])
                layer.lora_B["default"].weight.copy_(mine.lora_B[k])
                if not math.isclose(float(layer.scaling["default"]), mine.scaling):
                    raise RuntimeError(f"{path}: peft scaling {layer.scaling['default']} != {mine.scaling}")
            model.head.weight.copy_(self.heads.weight[k : k + 1])
            for name, p in model.named_parameters():
                p.requires_grad_("lora_" in name or name.startswith("head."))
            out.append(model.to(self.device).train(self.training))
        return out

    # ---- persistence -----------------------------------------------------------------------
    def saved_state_dict(self) -> dict[str, torch.Tensor]:
        """Members' LoRA A/B and heads, plus the merged stage-1 LoRA under ``base_lora.<path>.<field>``."""
        state = self.body.saved_state_dict()
        for path, lora in self.base_lora.items():
            for field, tensor in lora.items():
                state[f"base_lora.{path}.{field}"] = tensor
        return state

    def save_pretrained(self, directory: str | Path) -> None:
        save_checkpoint(
            directory, self.KIND, ensemble_meta(self.config, self.ensemble),
            self.saved_state_dict(), self.body.backbone_fingerprint(),
        )

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: str | torch.device = "cpu", *,
        trust_remote_code: bool = False, allow_external_paths: bool = False,
    ) -> "LoRAEnsemble":
        meta, tensors = load_checkpoint(directory, cls.KIND, allow_external_paths)
        config, ensemble = parse_ensemble_meta(meta, directory, trust_remote_code)
        base_lora: BaseLoRA = {}
        for key in [k for k in tensors if k.startswith("base_lora.")]:
            path, _, field = key.removeprefix("base_lora.").rpartition(".")
            base_lora.setdefault(path, {})[field] = tensors.pop(key)
        for path, lora in base_lora.items():
            if set(lora) != {"lora_A", "lora_B", "scaling"}:
                raise CheckpointError(f"{directory}: base_lora.{path} has fields {sorted(lora)}, expected lora_A, lora_B, scaling")
        try:
            model = cls.from_config(config, ensemble, base_lora)
        except (AttributeError, ValueError, RuntimeError) as err:  # base_lora naming modules the backbone lacks
            raise CheckpointError(f"{directory}: does not fit its backbone ({err})") from err
        model.body.load_saved_state(tensors, directory, meta.get("backbone_fingerprint"))
        return model.to(device)
