"""Typed configuration from YAML: one loader with presets, one mapping -> dataclass converter.

Every configuration in bayesrm is a dataclass whose fields are documented where they are
declared. :func:`from_mapping` builds one from a (YAML) mapping and checks it field by field:

- an unknown key fails with a did-you-mean suggestion;
- a value of the wrong type fails naming the field: ``int``, ``float`` (ints and numbers written
  as strings such as ``3e-4``, which YAML 1.1 reads as text, are accepted), ``bool`` (only true /
  false: the string ``"false"`` is refused), ``str``, ``Optional`` / ``Union``, ``list[...]``,
  ``dict[...]``, ``Literal[...]``, enums and nested dataclasses;
- the dataclass's own ``__post_init__`` checks run, and their errors are prefixed with the place.

Errors are :class:`ConfigError` (a ``ValueError``, so the CLI prints one line), of the form
``scenario.yaml: training.learning_rate: expected float, got str ('x')``.

:func:`load_config` reads a YAML mapping and applies one of its ``presets:`` (deep-merged).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import enum
import re
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from bayesrm.fileio import read_yaml_mapping

PRESETS_KEY = "presets"
_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


class ConfigError(ValueError):
    """A configuration value or key that does not fit its dataclass; the message names the place."""


def describe(value: Any) -> str:
    """``str ('x')``: the type and a short repr of a value, for error messages."""
    text = repr(value)
    return f"{type(value).__name__} ({text[:40] + '...' if len(text) > 43 else text})"


def suggest(name: str, known: typing.Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest known name, or '' when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@lru_cache(maxsize=None)
def field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of a dataclass's init fields (postponed annotations evaluated)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints.get(f.name, Any) for f in dataclasses.fields(cls) if f.init}


def type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in typing.get_args(tp))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin is not None:
        args = ", ".join(type_name(a) for a in typing.get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "null"
    return getattr(tp, "__name__", str(tp))


def convert(tp: Any, value: Any, where: str) -> Any:
    """``value`` checked (and lightly coerced: int -> float) against the annotation ``tp``."""
    if tp is Any or tp is object:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        arms = typing.get_args(tp)
        if value is None:
            if type(None) in arms:
                return None
            raise ConfigError(f"{where}: expected {type_name(tp)}, got null")
        errors = []
        for arm in sorted((a for a in arms if a is not type(None)), key=_arm_order):
            try:
                return convert(arm, value, where)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1 or all(_is_dataclass(a) for a in arms if a is not type(None)):
            raise errors[-1]
        raise ConfigError(f"{where}: expected {type_name(tp)}, got {describe(value)}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if any(value == a and type(value) is type(a) for a in allowed):
            return value
        raise ConfigError(f"{where}: expected one of {', '.join(map(repr, allowed))}; got {value!r}{suggest(str(value), map(str, allowed))}")
    if origin in (list, tuple, typing.Sequence) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list ({type_name(tp)}), got {describe(value)}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple or tp is tuple else items
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping ({type_name(tp)}), got {describe(value)}")
        args = typing.get_args(tp) or (Any, Any)
        return {convert(args[0], k, f"{where} key"): convert(args[1], v, f"{where}.{k}") for k, v in value.items()}
    if _is_dataclass(tp):
        return from_mapping(tp, value, where)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {describe(value)}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected int, got {describe(value)}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)  # YAML 1.1 reads 3e-4 as text
        raise ConfigError(f"{where}: expected float, got {describe(value)}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{where}: expected str, got {describe(value)}")
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        for member in tp:
            if value in (member, member.value, member.name):
                return member
        raise ConfigError(f"{where}: expected one of {[m.value for m in tp]}; got {value!r}")
    if isinstance(tp, type):
        if isinstance(value, tp):
            return value
        raise ConfigError(f"{where}: expected {type_name(tp)}, got {describe(value)}")
    return value  # an annotation we cannot check (a TypeVar, a string we could not resolve)


def _is_dataclass(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _arm_order(tp: Any) -> int:
    """Try the exact kinds first so that 1 stays an int in ``int | float`` and '1' a str in ``float | str``."""
    return {bool: 0, int: 1, str: 3}.get(tp, 2)


def from_mapping(cls: type, data: Any, where: str) -> Any:
    """An instance of dataclass ``cls`` from a mapping, every key and value checked (see module doc).

    ``where`` names the place for error messages, e.g. ``"sentiment.yaml: training"``. ``None``
    gives the defaults. A class may define ``prepare_mapping(data, where) -> dict`` (a classmethod)
    to accept older spellings before the checks.
    """
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} fields, got {describe(data)}")
    prepare = getattr(cls, "prepare_mapping", None)
    if prepare is not None:
        data = prepare(dict(data), where)
    hints = field_types(cls)
    kwargs = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{where}: keys must be text, got {describe(key)}")
        if key not in hints:
            raise ConfigError(f"{_join(where, key)}: unknown key{suggest(key, hints)}; known: {', '.join(sorted(hints))}")
        kwargs[key] = convert(hints[key], value, _join(where, key))
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err


def _join(where: str, key: str) -> str:
    """'file.yaml: bon' + 'prompts' -> 'file.yaml: bon.prompts'; 'file.yaml' + 'seed' -> 'file.yaml: seed'."""
    return f"{where}.{key}" if ": " in where else f"{where}: {key}"


def to_mapping(obj: Any, changed_only: bool = False) -> Any:
    """Plain YAML/JSON data of a (nested) config dataclass; enums become their values.

    ``changed_only`` keeps only fields that differ from the class defaults (for reports of
    ``TrainingArguments``-sized configs).
    """
    if _is_dataclass(type(obj)):
        defaults = _defaults(type(obj)) if changed_only else {}
        out = {}
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            value = getattr(obj, f.name)
            if changed_only and f.name in defaults and _plain(defaults[f.name]) == _plain(value):
                continue
            out[f.name] = to_mapping(value, changed_only)
        return out
    return _plain(obj)


LEGACY = "legacy"
"""Field metadata key: the value a field added later has in effect in results recorded before it existed,
e.g. ``field(default=1024, metadata={LEGACY: None})``. :func:`identity_mapping` leaves a field out while it
holds that value, so stage records made before the field existed stay fresh exactly when they still apply."""


def identity_mapping(obj: Any) -> Any:
    """:func:`to_mapping` for fingerprints: every field, except fields that hold their ``LEGACY`` value.

    Unlike ``changed_only``, a changed *default* still changes the mapping (a stage made with the old
    default is never taken for one made with the new), while adding a field with a ``LEGACY`` value
    leaves the fingerprints of earlier runs unchanged.
    """
    if _is_dataclass(type(obj)):
        out = {}
        for f in dataclasses.fields(obj):
            if not f.init:
                continue
            value = getattr(obj, f.name)
            if LEGACY in f.metadata and _plain(f.metadata[LEGACY]) == _plain(value):
                continue
            out[f.name] = identity_mapping(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [identity_mapping(v) for v in obj]
    if isinstance(obj, dict):
        return {k: identity_mapping(v) for k, v in obj.items()}
    return _plain(obj)


def _plain(value: Any) -> Any:
    if _is_dataclass(type(value)):
        return to_mapping(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def _defaults(cls: type) -> dict[str, Any]:
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def deep_merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``overrides`` merged in; nested mappings merge, everything else is replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def load_config(path: str | Path, preset: str | None = None, what: str = "config") -> dict[str, Any]:
    """The mapping in a YAML file with its ``presets:`` section removed and ``preset`` merged in."""
    path = Path(path)
    data = read_yaml_mapping(path, what)
    presets = data.pop(PRESETS_KEY, None) or {}
    if not isinstance(presets, Mapping):
        raise ConfigError(f"{path}: {PRESETS_KEY}: expected a mapping of name: overrides, got {describe(presets)}")
    if preset is not None:
        if preset not in presets:
            raise ConfigError(f"{path}: no preset {preset!r}{suggest(preset, map(str, presets))}; presets: {sorted(map(str, presets))}")
        chosen = presets[preset]
        if not isinstance(chosen, Mapping):
            raise ConfigError(f"{path}: {PRESETS_KEY}.{preset}: expected a mapping of overrides, got {describe(chosen)}")
        data = deep_merge(data, chosen)
    return data
