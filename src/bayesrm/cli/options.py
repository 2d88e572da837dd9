"""Command-line options generated from dataclass configs, so each option is declared (and documented) once.

A field's help text is its ``metadata["help"]`` or, failing that, the docstring written under it
in the class body. ``--config file.yaml`` supplies defaults (flat keys, ``-`` or ``_``); flags
given on the command line win.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import textwrap
import types
import typing
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

from bayesrm.fileio import read_yaml_mapping


@lru_cache(maxsize=None)
def attribute_docs(cls: type) -> dict[str, str]:
    """Docstrings written under dataclass fields (``x: int = 1`` then ``\"\"\"doc\"\"\"``), by field name."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(element type, is_list) of an annotation such as ``int``, ``float | None``, ``list[str] | None``."""
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing) | {"list": list, "dict": dict})  # noqa: S307 - our own annotations
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _base_type(args[0]) if args else (str, False)
    if origin is list:
        (inner,) = typing.get_args(annotation) or (str,)
        return inner, True
    if annotation in (int, float, str, bool):
        return annotation, False
    return str, False


def _parse_bool(text: str) -> bool:
    if text.lower() in {"1", "true", "yes", "on"}:
        return True
    if text.lower() in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def add_dataclass_options(parser: argparse.ArgumentParser, cls: type, only: Iterable[str] | None = None, title: str | None = None) -> None:
    """Add ``--field-name`` options for the dataclass fields of cls (all, or those named in ``only``)."""
    group = parser.add_argument_group(title or cls.__name__)
    docs = attribute_docs(cls)
    wanted = set(only) if only is not None else None
    for f in dataclasses.fields(cls):
        if wanted is not None and f.name not in wanted:
            continue
        if not f.init or f.name.startswith("_"):
            continue
        kind, is_list = _base_type(f.type)
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        )
        help_text = f.metadata.get("help") or docs.get(f.name, "")
        help_text = f"{help_text} (default: {default})".replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": f.name, "default": argparse.SUPPRESS, "help": help_text}
        if kind is bool:
            kwargs.update(type=_parse_bool, metavar="BOOL")
        else:
            kwargs.update(type=kind, metavar=f.name.upper())
        if is_list:
            kwargs["nargs"] = "+"
        group.add_argument("--" + f.name.replace("_", "-"), **kwargs)


def build_dataclass(cls: type, values: dict[str, Any], **overrides: Any) -> Any:
    """Instantiate cls from the parsed values that name its fields."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    kwargs = {k: v for k, v in values.items() if k in names}
    kwargs.update(overrides)
    return cls(**kwargs)


def load_yaml_defaults(path: str | Path) -> dict[str, Any]:
    """Flat option values from a YAML file, keys normalised to field names."""
    return {str(k).replace("-", "_"): v for k, v in read_yaml_mapping(path, "config").items()}


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse argv; values from ``--config`` fill in what the command line leaves unset (see :func:`apply_config`)."""
    args = parser.parse_args(argv)
    apply_config(parser, args)
    return args


def apply_config(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Fill in options the command line left unset from the ``--config`` YAML file.

    Only for subcommands that declare ``set_defaults(config_holds_options=True)``; for others
    (``bon``, ``rl``) --config names a scenario file that they read themselves. A value for an option
    is converted as the option's flag would convert it (``skip_invalid: "false"`` is False, not a true
    string); one it cannot convert raises ValueError naming the file and key.
    """
    config_path = getattr(args, "config", None)
    if not (config_path and getattr(args, "config_holds_options", False)):
        return
    actions = _subcommand_actions(parser, getattr(args, "command", None))
    for key, value in load_yaml_defaults(config_path).items():
        if hasattr(args, key):
            continue
        action = actions.get(key)
        setattr(args, key, _coerce(action, value, f"{config_path}: {key}") if action is not None else value)


def _subcommand_actions(parser: argparse.ArgumentParser, command: str | None) -> dict[str, argparse.Action]:
    """dest -> action of the subcommand's parser (or of ``parser`` itself when it has no subcommands)."""
    target = parser
    for action in parser._actions:  # argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            target = action.choices[command]
    return {a.dest: a for a in target._actions}


def _coerce(action: argparse.Action, value: Any, where: str) -> Any:
    if action.nargs in ("+", "*"):
        return [_coerce_one(action.type, v, where) for v in (value if isinstance(value, list) else [value])]
    return _coerce_one(action.type, value, where)


def _coerce_one(kind: Any, value: Any, where: str) -> Any:
    if kind is None or value is None:
        return value
    if kind is _parse_bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return _parse_bool(value)
            except argparse.ArgumentTypeError as err:
                raise ValueError(f"{where}: {err}") from None
        raise ValueError(f"{where}: expected true/false, got {value!r}")
    if kind in (int, float):
        ok = isinstance(value, (int, str)) or (kind is float and isinstance(value, float))
        if isinstance(value, bool) or not ok:
            raise ValueError(f"{where}: expected {'a whole number' if kind is int else 'a number'}, got {value!r}")
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"{where}: expected {'a whole number' if kind is int else 'a number'}, got {value!r}") from None
    if kind is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"{where}: expected a single value, got {type(value).__name__}")
        return str(value)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ValueError(f"{where}: expected a single value, got {value!r}")
    try:
        return kind(str(value))
    except (argparse.ArgumentTypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None
