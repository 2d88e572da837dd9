"""Build rewards by name or from a spec string.

Spec grammar: stages joined by ``|``, read left to right like a pipeline; each stage is
``name`` or ``name:key=value,key=value``.

- ``std:k=2``                          mu - 2 sigma
- ``up:beta2=0.5``                     UP-RLHF penalty
- ``std:k=2|log_sigmoid:q=0.85``       log sigmoid(mu - 2 sigma - r_ref(x)), r_ref the per-prompt 0.85-quantile
- ``log_sigmoid``                      log sigmoid(mu - r_ref(x)) (a transform alone applies to the mean)
- ``zscore|std:k=1``                   z-score the prediction (fit on reference samples), then mu - sigma
- ``log_sigmoid + std:k=1|log_sigmoid`` the AND sum of two log-sigmoid rewards, one prediction per term

Names: mean, std (lcb), var (uwo), min, up; transforms log_sigmoid; prefix zscore.
"""

from __future__ import annotations

import warnings
from dataclasses import fields
from typing import Any

from bayesrm.config import convert, field_types
from bayesrm.rewards.base import Reward
from bayesrm.rewards.conservative import Mean, MinMember, StdPenalty, UPPenalty, VarPenalty
from bayesrm.rewards.transforms import LogSigmoid, Standardized, SumOf

BASE_REWARDS: dict[str, type[Reward]] = {
    "mean": Mean,
    "std": StdPenalty,
    "lcb": StdPenalty,
    "var": VarPenalty,
    "uwo": VarPenalty,
    "min": MinMember,
    "up": UPPenalty,
}
TRANSFORMS: dict[str, type[Reward]] = {"log_sigmoid": LogSigmoid}
REWARD_NAMES = sorted([*BASE_REWARDS, *TRANSFORMS, "zscore"])


def _coerce(cls: type[Reward], key: str, value: Any) -> Any:
    """A parameter value (spec-string text or a keyword's value) checked against the field's type by the one
    converter, :func:`bayesrm.config.convert` (``"2"`` and ``2`` are the float 2.0; ``"x"``, ``true``, ``"nan"`` are refused)."""
    params = {f.name for f in fields(cls) if f.metadata.get("param")}
    if key not in params:
        raise ValueError(f"reward '{cls.name}' has no parameter '{key}'; parameters: {sorted(params) or 'none'}")
    return convert(field_types(cls)[key], value, f"reward '{cls.name}': {key}")


def _build(name: str, **params: Any) -> Reward:
    """One stage by name: ``_build("std", k=2)``, ``_build("log_sigmoid", base=reward, q=0.9)``."""
    key = name.strip().lower()
    if key in BASE_REWARDS:
        cls = BASE_REWARDS[key]
        return cls(**{k: _coerce(cls, k, v) for k, v in params.items()})
    if key in TRANSFORMS or key == "zscore":
        cls = TRANSFORMS.get(key, Standardized)
        base = params.pop("base", None)
        base = parse_reward(base) if isinstance(base, str) else (base or Mean())
        direct = {k: params.pop(k) for k in ("reference", "standardizer") if k in params}
        return cls(base=base, **direct, **{k: _coerce(cls, k, v) for k, v in params.items()})
    raise ValueError(f"unknown reward '{name}'; known: {', '.join(REWARD_NAMES)}")


def make_reward(name: str, **params: Any) -> Reward:
    """Deprecated alias: a reward by name, ``make_reward("std", k=2)``; use :func:`parse_reward`
    (``parse_reward("std", k=2)``, ``parse_reward("std:k=2|log_sigmoid:q=0.9")``), the one way to build a reward."""
    warnings.warn("bayesrm.rewards.make_reward is deprecated: use bayesrm.rewards.parse_reward "
                  "(e.g. parse_reward('std', k=2) or parse_reward('std:k=2|log_sigmoid:q=0.9'))", DeprecationWarning, stacklevel=2)
    return _build(name, **params)


def _parse_stage(stage: str, spec: str) -> tuple[str, dict[str, str]]:
    name, _, rest = stage.strip().partition(":")
    params: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise ValueError(f"reward spec {spec!r}: expected key=value, got {item!r}")
        params[key.strip()] = value.strip()
    if not name:
        raise ValueError(f"reward spec {spec!r} has an empty stage")
    return name.lower(), params


def split_sum(spec: str) -> list[str]:
    """The terms of an AND sum 'A + B' (at bracket depth 0; a '+' in an exponent such as 1e+3 is not a split)."""
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(spec):
        depth += (ch == "(") - (ch == ")")
        if ch == "+" and depth == 0 and not (i > 1 and spec[i - 1] in "eE" and spec[i - 2].isdigit()):
            terms.append(spec[start:i])
            start = i + 1
    terms.append(spec[start:])
    out = []
    for term in terms:
        term = term.strip()
        while term.startswith("(") and term.endswith(")"):
            term = term[1:-1].strip()
        if not term:
            raise ValueError(f"reward spec {spec!r} has an empty term in its sum")
        out.append(term)
    return out


def parse_reward(spec: str, **kwargs: Any) -> Reward:
    """Parse a spec string (see module docstring); ``kwargs`` go to the last stage (e.g. ``reference=``).

    ``A + B + ...`` is the sum of the terms' rewards (``SumOf``), each term scored from its own
    prediction (one reward model per property); with log_sigmoid terms, the logical AND of Wang et al. 2024.
    """
    terms = split_sum(spec)
    if len(terms) > 1:
        if kwargs:
            raise ValueError(f"reward spec {spec!r}: a sum takes no extra parameters ({sorted(kwargs)}); put them in its terms")
        return SumOf([parse_reward(term) for term in terms])
    spec = terms[0]
    stages = [_parse_stage(s, spec) for s in spec.split("|")]
    zscore = stages[0][0] == "zscore"
    if zscore:
        if stages[0][1]:
            raise ValueError(f"reward spec {spec!r}: zscore takes no parameters")
        stages = stages[1:] or [("mean", {})]
    if stages[0][0] in TRANSFORMS:  # "log_sigmoid" alone transforms the mean
        stages = [("mean", {}), *stages]
    (name, params), transforms = stages[0], stages[1:]
    if name not in BASE_REWARDS:
        raise ValueError(
            f"reward spec {spec!r}: unknown reward '{name}'; the first stage is one of {sorted(BASE_REWARDS)}"
            f" (optionally after zscore), or a transform {sorted(TRANSFORMS)} of the mean"
        )
    last = not transforms
    reward = _build(name, **params, **(kwargs if last and not zscore else {}))
    if zscore:
        reward = _build("zscore", base=reward, **(kwargs if last else {}))
    for i, (name, params) in enumerate(transforms):
        if name not in TRANSFORMS:
            raise ValueError(f"reward spec {spec!r}: '{name}' is not a transform; transforms: {sorted(TRANSFORMS)}")
        extra = kwargs if i == len(transforms) - 1 else {}
        reward = _build(name, base=reward, **params, **extra)
    return reward
