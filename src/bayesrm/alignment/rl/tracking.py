"""Per-step metrics of an RL run: a JSONL log and PNG plots (gold and proxy against KL and step)."""

from __future__ import annotations

import json
import os
import math
from pathlib import Path
from typing import Any


class JsonlLog:
    """Append-only JSONL file of per-step records (one JSON object a line, with a 'step' field)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def read(self) -> list[dict[str, Any]]:
        """The records; a last line cut short by a crash (no newline yet) is dropped, it is redone on resume.
        A line that is not UTF-8 JSON of an object is a ValueError naming the file and line."""
        if not self.path.is_file():
            return []
        out = []
        raw = self.path.read_bytes()
        if raw and not raw.endswith(b"\n"):
            raw = raw[: raw.rfind(b"\n") + 1]
        for lineno, line in enumerate(raw.split(b"\n"), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line.decode("utf-8"))
            except UnicodeDecodeError as err:
                raise ValueError(f"{self.path}:{lineno}: not valid UTF-8 (column {err.start + 1})") from None
            except json.JSONDecodeError as err:
                raise ValueError(f"{self.path}:{lineno}: corrupt JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{self.path}:{lineno}: expected a JSON object, got {type(record).__name__}")
            out.append(record)
        return out

    def truncate_after(self, step: int) -> None:
        """Drop records with step > ``step`` (on resume, steps after the checkpoint are redone)."""
        kept = [r for r in self.read() if r.get("step", 0) <= step]
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept))
        os.replace(tmp, self.path)  # atomic: a crash here leaves the old log or the cut one, never half


def plot_run(records: list[dict[str, Any]], out_dir: str | Path, kl_key: str = "kl_k3") -> list[Path]:
    """Gold and proxy reward against KL and against step; returns the PNG paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not records:
        return []
    series = {
        "proxy (mean)": [r.get("proxy") for r in records],
        "reward (conservative)": [r.get("reward") for r in records],
        "gold": [r.get("gold") for r in records],
    }
    paths = []
    for x_key, x_label, name in ((kl_key, f"KL to reference ({kl_key}, nats)", "reward_vs_kl.png"), ("step", "step", "reward_vs_step.png")):
        xs = [r.get(x_key) for r in records]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        for label, ys in series.items():
            ax = axes[1] if label == "gold" else axes[0]
            pts = [(x, y) for x, y in zip(xs, ys) if is_finite_number(x) and is_finite_number(y)]
            if pts:
                ax.plot(*zip(*pts), marker="o", markersize=3, linewidth=0.8, alpha=0.8, label=label)
        axes[0].set_title("proxy")
        axes[1].set_title("gold")
        for ax in axes:
            ax.set_xlabel(x_label)
            ax.grid(alpha=0.3)
            ax.legend(loc="best", fontsize=8)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=100)
        plt.close(fig)
        paths.append(out_dir / name)
    return paths


def is_finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)
