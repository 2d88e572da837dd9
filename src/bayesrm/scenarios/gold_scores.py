"""Gold scores of (prompt, response) texts through a per-text cache beside the samples.

``<cache_dir>/gold/<judge>.jsonl`` is keyed by the judge's fingerprint and each text, so every run,
seed and stage that shares a sample cache scores a text with an expensive gold only once, and an
interrupted scoring resumes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from bayesrm.types import RewardPrediction


def judge_fingerprint(judge: Any) -> str:
    """The judge's name, plus a hash of its weights file for a reward-model judge."""
    name = str(getattr(judge, "name", type(judge).__name__))
    weights = Path(getattr(judge, "path", "")) / "model.safetensors"
    if getattr(judge, "path", None) and weights.is_file():
        name += ":" + hashlib.blake2b(weights.read_bytes(), digest_size=8).hexdigest()
    return name


def cached_judge_scores(judge: Any, prompts: list[str], responses: list[str], cache_dir: Path, progress: bool = True,
                        chunk: int = 256) -> RewardPrediction:
    """``judge``'s scores of the texts, from ``cache_dir/gold/<judge>.jsonl`` where known; the rest are
    scored (each distinct text once) and appended in chunks of ``chunk`` texts."""
    from bayesrm.generation.cache import slugify, stable_hash

    path = Path(cache_dir) / "gold" / f"{slugify(judge_fingerprint(judge))}.jsonl"
    known: dict[str, float] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                known[rec["key"]] = float(rec["score"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                continue  # a line cut short by a crash: rescored below
    keys = [stable_hash([p, r]) for p, r in zip(prompts, responses)]
    todo, seen = [], set()
    for i, k in enumerate(keys):
        if k not in known and k not in seen:  # one index per distinct text
            seen.add(k)
            todo.append(i)
    if todo:
        path.parent.mkdir(parents=True, exist_ok=True)
        for start in range(0, len(todo), chunk):
            idx = todo[start : start + chunk]
            got = judge.score([prompts[i] for i in idx], [responses[i] for i in idx], batch_size=32, progress=progress).mean
            with open(path, "a", encoding="utf-8") as f:
                f.write("".join(json.dumps({"key": keys[i], "score": float(v)}) + "\n" for i, v in zip(idx, got.tolist())))
            known.update((keys[i], float(v)) for i, v in zip(idx, got.tolist()))
    return RewardPrediction.point(torch.tensor([known[k] for k in keys], dtype=torch.float32))
