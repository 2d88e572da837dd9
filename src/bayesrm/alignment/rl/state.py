"""Checkpoints of an RL run: LoRA + value head + optimizer + RNG + reward state.

Tensors go to ``model.safetensors`` and everything else to ``config.json`` (through
bayesrm.models.checkpoint, atomic writes); nothing is pickled. The optimizer and RNG states are flattened
by bayesrm.training.state (``optim.*`` and ``rng.*`` tensors). Restoring a checkpoint into a
freshly built trainer continues the run exactly as if it had not stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bayesrm.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from bayesrm.training.state import optimizer_from_tensors, optimizer_to_tensors, set_torch_rng, torch_rng_tensors

KIND = "rl_state"


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trained tensors (LoRA and value head) by parameter name."""
    return {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}


def save_state(
    directory: str | Path,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    reward_tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
) -> None:
    """Write one checkpoint directory (config.json + model.safetensors)."""
    opt_tensors, groups = optimizer_to_tensors(optimizer, prefix="optim.")
    tensors = {f"model.{k}": v for k, v in trainable_state(module).items()}
    tensors.update(opt_tensors)
    tensors.update(torch_rng_tensors("rng."))
    tensors.update(reward_tensors)
    save_checkpoint(directory, KIND, {**meta, "optimizer_param_groups": groups}, tensors)


def load_state(
    directory: str | Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Restore weights, optimizer and RNG; returns (meta, remaining tensors, e.g. the reward's)."""
    meta, tensors = load_checkpoint(directory, KIND)
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    expected = trainable_state(module)
    if set(weights) != set(expected):
        missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
        raise CheckpointError(f"{directory}: trained weights do not match this policy (missing {missing[:3]}, unexpected {unexpected[:3]})")
    with torch.no_grad():
        params = dict(module.named_parameters())
        for name, value in weights.items():
            if params[name].shape != value.shape:
                raise CheckpointError(f"{directory}: {name} has shape {tuple(value.shape)}, expected {tuple(params[name].shape)}")
            params[name].copy_(value)
    optimizer_from_tensors(optimizer, tensors, meta["optimizer_param_groups"], prefix="optim.", where=f"{directory}: optimizer state")
    set_torch_rng(tensors, "rng.")
    rest = {k: v for k, v in tensors.items() if k.startswith("reward.")}
    return meta, rest
