"""Comparisons that survive a noisy machine: run the compared things interleaved (A B A B A B), one
paired ratio per round, and report the median ratio with its range over the rounds.

A burst of load from another job hits A and B of the same round alike, so the per-round ratio
barely moves, and the median ignores the odd round where it did not. Used by the scripts in
benchmarks/ (run them as ``python benchmarks/NAME.py``, which puts this folder on sys.path).
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, Mapping, Sequence


def run_interleaved(runs: Mapping[str, Callable[[], float]], rounds: int, warmup: bool = False) -> dict[str, list[float]]:
    """Call every run once per round, in the given order, ``rounds`` times; each returns a measured
    value (seconds, or a rate). ``warmup``: one unrecorded call of each first."""
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    if warmup:
        for fn in runs.values():
            fn()
    values: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            values[name].append(float(fn()))
    return values


def seconds_of(fn: Callable[[], object]) -> Callable[[], float]:
    """A run that returns the wall time of one call of ``fn``."""

    def timed() -> float:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    return timed


def paired_ratios(numerator: Sequence[float], denominator: Sequence[float]) -> list[float]:
    """numerator[i] / denominator[i] for each round i."""
    if len(numerator) != len(denominator) or not numerator:
        raise ValueError("need the same, non-zero number of rounds for both sides")
    return [a / b for a, b in zip(numerator, denominator)]


def summarize(ratios: Sequence[float]) -> dict[str, float]:
    """{'median', 'min', 'max', 'rounds'} of per-round ratios."""
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "rounds": len(ratios)}


def format_ratio(label: str, ratios: Sequence[float], target: str = "", ok: Callable[[float], bool] | None = None) -> str:
    """``label: 1.62x median (range 1.48-1.71 over 5 interleaved rounds) (target >= 1.0) -> PASS``."""
    s = summarize(ratios)
    line = f"{label}: {s['median']:.2f}x median (range {s['min']:.2f}-{s['max']:.2f} over {s['rounds']} interleaved rounds)"
    if target:
        line += f" ({target})"
    if ok is not None:
        line += " -> PASS" if ok(s["median"]) else " -> FAIL"
    return line
