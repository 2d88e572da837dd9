"""Torch device names as configs spell them: ``auto`` | ``cpu`` | ``cuda`` | ``cuda:N`` | ``mps``."""

from __future__ import annotations

import re

import torch

_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def check_device(name: str) -> str:
    """``name`` when it is a device this module knows how to spell; a ValueError listing them otherwise."""
    if not isinstance(name, str) or not _DEVICE.fullmatch(name):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps; got {name!r}")
    return name


def resolve_device(name: str) -> str:
    """The device to run on: ``auto`` is ``cuda`` when a CUDA device is visible, else ``cpu``; an explicit
    ``cuda`` / ``mps`` that this machine lacks fails here, before any work, rather than mid-run."""
    check_device(name)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r}: no CUDA device is visible (use 'auto' or 'cpu')")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) are visible")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps': the MPS backend is not available (use 'auto' or 'cpu')")
    return name
