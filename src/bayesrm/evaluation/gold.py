"""Gold judges: the "true" reward that proxies are measured against (Gao et al.'s synthetic-gold protocol).

Every judge follows the RewardScorer contract, ``score(prompts, responses) -> RewardPrediction``
with var = 0. Built in: VADER compound sentiment of the response (Hutto & Gilbert, 2014),
TextBlob polarity or subjectivity (a lexicon; needs no NLTK corpora), conciseness (minus the response's
length in words or characters, ``length:words``: a deterministic second property), any saved bayesrm reward
model (``rm:<dir>``), the embedded gold reward model ``rm:helpful`` (SmolLM2-135M + LoRA trained on
real preferences, see docs/helpful.md), and any Python callable. ``make_judge`` builds one from a
spec string or dict.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from bayesrm.types import Prompt, RewardPrediction

JudgeFn = Callable[[list[Prompt], list[str]], Sequence[float]]


def _check_lengths(prompts: Sequence[Prompt], responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")


class CallableJudge:
    """Gold reward from ``fn(prompts, responses) -> one float per pair``, called in batches."""

    def __init__(self, fn: JudgeFn, name: str = "callable"):
        self.fn = fn
        self.name = name

    def score(
        self, prompts: Sequence[Prompt], responses: Sequence[str], batch_size: int = 32, progress: bool = False
    ) -> RewardPrediction:
        _check_lengths(prompts, responses)
        values: list[float] = []
        starts = range(0, len(responses), max(batch_size, 1))
        for start in tqdm(starts, desc=f"gold {self.name}", unit="batch", disable=not progress):
            p, r = list(prompts[start : start + batch_size]), list(responses[start : start + batch_size])
            out = [float(v) for v in self.fn(p, r)]
            if len(out) != len(r):
                raise ValueError(f"judge {self.name!r} returned {len(out)} scores for a batch of {len(r)}")
            bad = next((start + i for i, v in enumerate(out) if not math.isfinite(v)), None)
            if bad is not None:
                raise ValueError(f"judge {self.name!r} returned a non-finite score for pair {bad}")
            values.extend(out)
        return RewardPrediction.point(torch.tensor(values, dtype=torch.float32))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class VaderJudge(CallableJudge):
    """VADER compound sentiment of the response, in [-1, 1] (package vadersentiment, MIT)."""

    def __init__(self) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        analyzer = SentimentIntensityAnalyzer()
        super().__init__(lambda _, responses: [analyzer.polarity_scores(r)["compound"] for r in responses], "vader")


class TextBlobJudge(CallableJudge):
    """TextBlob sentiment of the response: polarity in [-1, 1] or subjectivity in [0, 1] (pattern lexicon)."""

    PROPERTIES = ("polarity", "subjectivity")

    def __init__(self, property: str = "polarity") -> None:
        if property not in self.PROPERTIES:
            raise ValueError(f"TextBlob property must be one of {self.PROPERTIES}, got {property!r}")
        from textblob import TextBlob

        self.property = property
        super().__init__(
            lambda _, responses: [getattr(TextBlob(r).sentiment, property) for r in responses], f"textblob:{property}"
        )


class LengthJudge(CallableJudge):
    """Conciseness: minus the length of the response, so that shorter is better (higher) as for every judge.

    unit ``words``: the number of whitespace-separated words (``str.split()``); ``chars``: the number of
    characters of the response with surrounding whitespace stripped. The prompt is ignored."""

    UNITS = ("words", "chars")

    def __init__(self, unit: str = "words") -> None:
        if unit not in self.UNITS:
            raise ValueError(f"length unit must be one of {self.UNITS}, got {unit!r}")
        self.unit = unit
        count = (lambda r: len(r.split())) if unit == "words" else (lambda r: len(r.strip()))
        super().__init__(lambda _, responses: [-float(count(r)) for r in responses], f"length:{unit}")


EMBEDDED_RMS = {"helpful": "gold_helpful"}
"""Embedded gold reward models: name -> directory under bayesrm/data/assets (config.json + model.safetensors)."""


def embedded_rm_path(name: str) -> Path:
    """Directory of an embedded gold reward model (``rm:helpful``)."""
    from importlib import resources

    if name not in EMBEDDED_RMS:
        raise ValueError(f"unknown embedded reward model {name!r}; embedded: {sorted(EMBEDDED_RMS)}")
    return Path(str(resources.files("bayesrm.data") / "assets" / EMBEDDED_RMS[name]))


class RewardModelJudge:
    """A saved bayesrm reward model (or ensemble / posterior) as gold: its mean reward, var = 0.

    path: a checkpoint directory or the name of an embedded gold RM (``helpful``).
    dtype: ``fp32`` or ``bf16`` (bf16 autocast: about 1.5x faster on CPUs with AVX-512 BF16 / AMX and on
    GPUs; scores differ from fp32 by about 1e-2, so a study must keep one dtype; spec ``rm:helpful@bf16``)."""

    DTYPES = ("fp32", "bf16")

    def __init__(self, path: str | Path, device: str | torch.device = "cpu", dtype: str = "fp32"):
        from bayesrm.registry import load_scorer

        if dtype not in self.DTYPES:
            raise ValueError(f"reward-model judge dtype must be one of {self.DTYPES}, got {dtype!r}")
        self.dtype = dtype
        self.name = f"rm:{path}" + ("" if dtype == "fp32" else f"@{dtype}")
        if str(path) in EMBEDDED_RMS:
            path = embedded_rm_path(str(path))
        self.path = str(path)
        self.model = load_scorer(path, device=str(device))

    def score(
        self, prompts: Sequence[Prompt], responses: Sequence[str], batch_size: int = 32, progress: bool = False
    ) -> RewardPrediction:
        _check_lengths(prompts, responses)
        device = getattr(self.model, "device", torch.device("cpu"))
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=self.dtype == "bf16"):
            mean = self.model.score(prompts, responses, batch_size=batch_size, progress=progress).mean
        return RewardPrediction.point(mean.float())

    def __repr__(self) -> str:
        return f"RewardModelJudge({self.path!r})"


JUDGE_SPECS = ("'vader', 'textblob', 'textblob:polarity', 'textblob:subjectivity', 'length' (= 'length:words': minus the "
               "response's word count), 'length:chars', 'rm:helpful', 'rm:<checkpoint dir>' "
               "(append '@bf16' to an rm spec to score under bf16 autocast)")


def make_judge(spec: str | dict[str, Any], device: str = "cpu") -> CallableJudge | RewardModelJudge:
    """A gold judge from a spec: a string (see JUDGE_SPECS) or a dict such as
    ``{"type": "textblob", "property": "subjectivity"}``, ``{"type": "length", "unit": "words"}`` or ``{"type": "rm", "path": ..., "device": "cpu"}``. ``device``: where a reward-model judge runs (a dict spec's own
    ``device`` wins); the other judges run on the CPU."""
    if isinstance(spec, dict):
        spec = dict(spec)
        kind = str(spec.pop("type", "")).lower()
        if kind == "vader" and not spec:
            return VaderJudge()
        if kind == "textblob" and set(spec) <= {"property"}:
            return TextBlobJudge(**spec)
        if kind == "length" and set(spec) <= {"unit"}:
            return LengthJudge(**spec)
        if kind == "rm" and "path" in spec and set(spec) <= {"path", "device", "dtype"}:
            return RewardModelJudge(**{"device": device, **spec})
        raise ValueError(
            f"gold judge spec {spec!r} with type {kind!r}: expected type vader (no options), "
            "textblob (option 'property'), length (option 'unit') or rm (options 'path', 'device', 'dtype')"
        )
    if not isinstance(spec, str):
        raise ValueError(f"gold judge spec must be a string or a dict, got {type(spec).__name__}")
    kind, _, arg = spec.partition(":")
    kind = kind.strip().lower()
    if kind == "vader" and not arg:
        return VaderJudge()
    if kind == "textblob":
        return TextBlobJudge(arg or "polarity")
    if kind == "length":
        return LengthJudge(arg or "words")
    if kind == "rm" and arg:
        path, at, dtype = arg.rpartition("@") if arg.endswith(tuple(f"@{d}" for d in RewardModelJudge.DTYPES)) else (arg, "", "")
        return RewardModelJudge(path, device=device, dtype=dtype or "fp32")
    raise ValueError(f"unknown gold judge {spec!r}; expected one of {JUDGE_SPECS}")
