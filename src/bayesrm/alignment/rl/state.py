"""Checkpoints of an RL run: LoRA + value head + optimizer + RNG + reward state.

Tensors go to ``model.safetensors`` and everything else to ``config.json`` (through
bayesrm.models.checkpoint, atomic writes); nothing is pickled. Restoring a checkpoint into a
freshly built trainer continues the run exactly as if it had not stopped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bayesrm.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

KIND = "rl_state"


def trainable_state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The trained tensors (LoRA and value head) by parameter name."""
    return {n: p.detach() for n, p in module.named_parameters() if p.requires_grad}


def optimizer_to_flat(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """Optimizer state as ('optim.{param}.{key}' -> tensor, JSON-able param groups)."""
    sd = optimizer.state_dict()
    tensors = {}
    for idx, slots in sd["state"].items():
        for key, value in slots.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value)
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def optimizer_from_flat(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]]) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def rng_tensors() -> dict[str, torch.Tensor]:
    out = {"rng.cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"rng.cuda.{i}"] = s
    return out


def set_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["rng.cpu"])
    cuda = sorted((k for k in tensors if k.startswith("rng.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])


def save_state(
    directory: str | Path,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    reward_tensors: dict[str, torch.Tensor],
    meta: dict[str, Any],
) -> None:
    """Write one checkpoint directory (config.json + model.safetensors)."""
    opt_tensors, groups = optimizer_to_flat(optimizer)
    tensors = {f"model.{k}": v for k, v in trainable_state(module).items()}
    tensors.update(opt_tensors)
    tensors.update(rng_tensors())
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
    optimizer_from_flat(optimizer, tensors, meta["optimizer_param_groups"])
    set_rng(tensors)
    rest = {k: v for k, v in tensors.items() if k.startswith("reward.")}
    return meta, rest
