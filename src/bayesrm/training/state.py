"""Resumable training state without pickle: optimizer, LR scheduler and RNG states as safetensors + JSON.

``transformers.Trainer`` saves these with ``torch.save`` (optimizer.pt, scheduler.pt, rng_state.pth)
and reads them back with ``torch.load``. :class:`~bayesrm.training.trainer.RewardTrainer` uses the
functions here instead, so a bayesrm checkpoint directory never holds (and resume never opens) a
pickle. Every file is written atomically; :func:`last_complete_checkpoint` picks the newest
``checkpoint-N`` whose every file was written, so a kill -9 in the middle of saving one is harmless.
"""

from __future__ import annotations

import json
import os
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from bayesrm.models.checkpoint import CONFIG_NAME, CheckpointError

OPTIMIZER_TENSORS = "optimizer.safetensors"
OPTIMIZER_JSON = "optimizer.json"
RNG_TENSORS = "rng_state.safetensors"
RNG_JSON = "rng_state.json"
TRAINER_STATE = "trainer_state.json"
PICKLE_NAMES = ("optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt", "training_args.bin")
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def _atomic_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def _atomic_tensors(path: Path, tensors: dict[str, torch.Tensor]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, path)


def _load_pair(directory: Path, tensors_name: str, json_name: str) -> tuple[dict[str, torch.Tensor], Any]:
    try:
        tensors = load_file(str(directory / tensors_name))
        data = json.loads((directory / json_name).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{directory}: unreadable training state {tensors_name} / {json_name} ({err})") from err
    return tensors, data


def optimizer_to_tensors(optimizer: torch.optim.Optimizer, prefix: str = "") -> tuple[dict[str, torch.Tensor], list[dict[str, Any]]]:
    """An optimizer's state without pickle: (``{prefix}{param index}.{slot}`` -> tensor, JSON-able param groups)."""
    sd = optimizer.state_dict()
    tensors = {f"{prefix}{idx}.{key}": torch.as_tensor(value) for idx, slots in sd["state"].items() for key, value in slots.items()}
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], groups: list[dict[str, Any]],
                           prefix: str = "", where: str = "optimizer state") -> None:
    """Inverse of :func:`optimizer_to_tensors` (tensors not starting with ``prefix`` are ignored); a state that does not
    fit ``optimizer`` is a CheckpointError naming ``where``."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    try:
        for name, value in tensors.items():
            if name.startswith(prefix):
                idx, key = name[len(prefix) :].split(".", 1)
                state.setdefault(int(idx), {})[key] = value
        groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    except (KeyError, ValueError, RuntimeError, TypeError, AttributeError) as err:
        raise CheckpointError(f"{where}: does not fit this run's optimizer ({err})") from err


def torch_rng_tensors(prefix: str) -> dict[str, torch.Tensor]:
    """torch's generator states: ``{prefix}cpu`` and ``{prefix}cuda.{i}`` per visible GPU."""
    out = {f"{prefix}cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"{prefix}cuda.{i}"] = s
    return out


def set_torch_rng(tensors: dict[str, torch.Tensor], prefix: str) -> None:
    """Inverse of :func:`torch_rng_tensors` (the CUDA states only where GPUs are visible)."""
    torch.random.set_rng_state(tensors[f"{prefix}cpu"])
    cuda = sorted((k for k in tensors if k.startswith(f"{prefix}cuda.")), key=lambda k: int(k.rsplit(".", 1)[1]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([tensors[k] for k in cuda])


def save_optimizer_state(directory: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """optimizer.safetensors (per-parameter state) + optimizer.json (param groups, scheduler state)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors, groups = optimizer_to_tensors(optimizer)
    _atomic_tensors(directory / OPTIMIZER_TENSORS, tensors)
    _atomic_json(directory / OPTIMIZER_JSON, {"param_groups": groups, "scheduler": scheduler.state_dict() if scheduler else None})


def load_optimizer_state(directory: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any) -> bool:
    """Restore what :func:`save_optimizer_state` wrote; False when the checkpoint has none. Pickles are refused."""
    directory = Path(directory)
    if not (directory / OPTIMIZER_TENSORS).exists():
        refuse_pickles(directory)
        return False
    tensors, data = _load_pair(directory, OPTIMIZER_TENSORS, OPTIMIZER_JSON)
    optimizer_from_tensors(optimizer, tensors, data["param_groups"], where=str(directory / OPTIMIZER_JSON))
    try:
        if scheduler is not None and data.get("scheduler") is not None:
            scheduler.load_state_dict(data["scheduler"])
    except (KeyError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{directory / OPTIMIZER_JSON}: does not fit this run's optimizer ({err})") from err
    return True


def _rng_names(rank: int | None) -> tuple[str, str]:
    if rank is None:
        return RNG_TENSORS, RNG_JSON
    return f"rng_state_{rank}.safetensors", f"rng_state_{rank}.json"


def save_rng_state(directory: str | Path, rank: int | None = None) -> None:
    """Python, NumPy and torch (CPU, CUDA) generator states (one file pair per process when ``rank`` is given)."""
    tensors_name, json_name = _rng_names(rank)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {**torch_rng_tensors("torch."), "numpy.keys": torch.from_numpy(np.asarray(keys, dtype=np.int64))}
    version, internal, gauss = random.getstate()
    _atomic_tensors(directory / tensors_name, tensors)
    _atomic_json(directory / json_name, {"python": [version, list(internal), gauss],
                                        "numpy": [kind, int(pos), int(has_gauss), float(cached)]})


def load_rng_state(directory: str | Path, rank: int | None = None) -> bool:
    tensors_name, json_name = _rng_names(rank)
    directory = Path(directory)
    if not (directory / tensors_name).exists():
        refuse_pickles(directory)
        return False
    tensors, data = _load_pair(directory, tensors_name, json_name)
    version, internal, gauss = data["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, pos, has_gauss, cached = data["numpy"]
    np.random.set_state((kind, tensors["numpy.keys"].numpy().astype(np.uint32), pos, has_gauss, cached))
    set_torch_rng(tensors, "torch.")
    return True


def refuse_pickles(directory: Path) -> None:
    """A checkpoint holding only Trainer's pickle files (from plain transformers) is refused, not unpickled."""
    found = [n for n in PICKLE_NAMES if (directory / n).exists()]
    if found:
        raise CheckpointError(f"{directory}: holds pickle files {found}; bayesrm never unpickles. Resume from a "
                              "checkpoint written by bayesrm (optimizer.safetensors, rng_state.safetensors)")


def is_complete(directory: Path) -> bool:
    """Every file of a checkpoint was written (trainer_state.json comes last and must parse)."""
    try:
        json.loads((directory / TRAINER_STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    needed = (CONFIG_NAME, OPTIMIZER_TENSORS, OPTIMIZER_JSON)
    rng = (directory / RNG_JSON).is_file() or any(directory.glob("rng_state_*.json"))
    return rng and all((directory / n).is_file() for n in needed)


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` under output_dir, or None."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if (m := _CHECKPOINT.match(p.name)) and p.is_dir()]
    for _, path in sorted(found, reverse=True):
        if is_complete(path):
            return str(path)
    return None
