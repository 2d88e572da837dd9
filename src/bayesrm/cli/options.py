"""Command-line options generated from dataclass configs, so each option is declared (and documented) once.

A field's help text is its ``metadata["help"]`` or, failing that, the docstring written under it
in the class body. ``Literal`` fields become choices, ``bool`` fields take an optional true/false
(``--include-head`` alone means true), ``X | None`` fields also accept ``none``.

``--config`` has one meaning per kind of command:

- ``train``, ``laplace``, ``score``, ``eval``: an *option file*, flat ``option: value`` pairs with the
  command's own option names (``-`` or ``_``), optionally with ``presets: {name: {option: value}}``
  chosen by ``--preset``. Flags given on the command line win. A key that is no option of the
  command, or a value of the wrong type, fails naming the file and the option.
- ``bon``, ``demo``, ``rl``: a *scenario file* (bayesrm.scenarios.config.ScenarioConfig) or the name of
  a built-in one; ``--preset`` chooses one of its presets and the generated flags override its fields.
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
from typing import Any, Callable, Iterable

from bayesrm.config import ConfigError, convert, field_types, from_mapping, load_config, suggest


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


def _flag_kind(annotation: Any) -> tuple[Any, bool, bool]:
    """(element type or Literal, is_list, accepts None) of an annotation; None when no flag fits (dicts, dataclasses)."""
    optional = False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(args) < len(typing.get_args(annotation))
        if not args:
            return None, False, optional
        kind, is_list, _ = _flag_kind(args[0])
        return kind, is_list, optional
    if origin is list:
        (inner,) = typing.get_args(annotation) or (str,)
        kind = inner if inner in (int, float, str, bool) or typing.get_origin(inner) is typing.Literal else None
        return kind, True, optional
    if annotation in (int, float, str, bool) or origin is typing.Literal:
        return annotation, False, optional
    if isinstance(annotation, type) and issubclass(annotation, str):  # str enums (TrainingArguments)
        return str, False, optional
    return None, False, optional


def parse_bool(text: str) -> bool:
    if text.lower() in {"1", "true", "yes", "on"}:
        return True
    if text.lower() in {"0", "false", "no", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


_parse_bool = parse_bool  # the name fuzz tests use


def _or_none(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def wrapped(text: str) -> Any:
        return None if text.lower() in {"none", "null"} else parse(text)

    wrapped.__name__ = getattr(parse, "__name__", "value")
    wrapped.inner = parse  # type: ignore[attr-defined]
    return wrapped


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return dataclasses.MISSING


def add_dataclass_options(
    parser: argparse.ArgumentParser,
    cls: type,
    only: Iterable[str] | None = None,
    exclude: Iterable[str] = (),
    title: str | None = None,
    prefix: str = "",
    parsers: dict[str, Callable[[str], Any]] | None = None,
    flag_prefix: str | None = None,
    default_note: str | None = None,
) -> list[str]:
    """Add ``--[prefix-]field-name`` options for the fields of dataclass cls; returns their dests.

    Options take ``dest = prefix.field`` (just ``field`` without a prefix) and no default, so
    ``vars(args)`` holds exactly what was given. ``parsers`` replaces the parser of named fields;
    ``flag_prefix`` (default: prefix) is what the flag names start with; ``default_note`` replaces
    the defaults shown in the help (e.g. for flags that override a file).
    """
    group = parser.add_argument_group(title or cls.__name__)
    docs = attribute_docs(cls)
    hints = field_types(cls)
    wanted = set(only) if only is not None else None
    dests = []
    for f in dataclasses.fields(cls):
        if (wanted is not None and f.name not in wanted) or f.name in exclude or not f.init or f.name.startswith("_"):
            continue
        kind, is_list, optional = _flag_kind(hints[f.name])
        if kind is None:
            continue  # mappings and nested configs: config files only
        default = field_default(f)
        required = default is dataclasses.MISSING
        help_text = f.metadata.get("help") or docs.get(f.name, "")
        if not required:
            help_text = f"{help_text} (default: {default_note or getattr(default, 'value', default)})"
        dest = f"{prefix}.{f.name}" if prefix else f.name
        kwargs: dict[str, Any] = {"dest": dest, "help": help_text.replace("%", "%%"), "required": required}
        if not required:
            kwargs["default"] = argparse.SUPPRESS
        if typing.get_origin(kind) is typing.Literal:
            kwargs.update(choices=typing.get_args(kind), metavar="{" + ",".join(map(str, typing.get_args(kind))) + "}")
        elif kind is bool:
            kwargs.update(type=parse_bool, metavar="BOOL")
            if not is_list:
                kwargs.update(nargs="?", const=True)
        else:
            kwargs.update(type=kind, metavar=f.name.upper())
        if parsers and f.name in parsers:
            kwargs["type"] = parsers[f.name]
            kwargs.pop("choices", None)
        elif optional and "type" in kwargs:
            kwargs["type"] = _or_none(kwargs["type"])
        if is_list:
            kwargs["nargs"] = "+"
        start = prefix if flag_prefix is None else flag_prefix
        flag = f"{start}-{f.name}" if start else f.name
        group.add_argument("--" + flag.replace("_", "-").replace(".", "-"), **kwargs)
        dests.append(dest)
    classes = parser.get_default("option_classes") or ()
    parser.set_defaults(option_classes=(*classes, cls))
    return dests


def given(args: argparse.Namespace, name: str) -> bool:
    """Whether an option was set, on the command line or in the --config file (a flag's default is not).

    After :func:`apply_config` this is its record (``args.options_given``; an option deleted from args
    since counts as unset); before, only options without a default (those of
    :func:`add_dataclass_options`) can be told apart, by being present."""
    recorded = getattr(args, "options_given", None)
    return name in vars(args) and (recorded is None or name in recorded)


_NOT_GIVEN = object()
"""The default every option gets in :func:`command_line_dests`' second parse."""


def command_line_dests(parser: argparse.ArgumentParser, argv: list[str] | None) -> frozenset[str]:
    """The dests argv itself sets (``None``: ``sys.argv[1:]``, as argparse reads it), told apart from
    defaults by parsing argv again with every default replaced by a sentinel (then restored)."""
    actions: dict[int, argparse.Action] = {}
    parsers = [parser]
    while parsers:
        for action in parsers.pop()._actions:
            if isinstance(action, argparse._SubParsersAction):  # argparse keeps subparsers only here
                parsers.extend(action.choices.values())
            if action.default is not argparse.SUPPRESS:
                actions[id(action)] = action
    defaults = {key: action.default for key, action in actions.items()}
    try:
        for action in actions.values():
            action.default = _NOT_GIVEN
        parsed = parser.parse_args(argv)
    finally:
        for key, action in actions.items():
            action.default = defaults[key]
    return frozenset(dest for dest, value in vars(parsed).items() if value is not _NOT_GIVEN)


def source(args: argparse.Namespace) -> str:
    """Where option values come from, for error messages."""
    return str(args.config) if getattr(args, "config", None) and getattr(args, "config_holds_options", False) else "options"


def build_dataclass(cls: type, args: argparse.Namespace | dict[str, Any], **overrides: Any) -> Any:
    """cls from the options that name its fields (plus overrides), checked by :func:`from_mapping`."""
    values = vars(args) if isinstance(args, argparse.Namespace) else args
    where = source(args) if isinstance(args, argparse.Namespace) else "options"
    names = field_types(cls)
    return from_mapping(cls, {**{k: v for k, v in values.items() if k in names}, **overrides}, where)


def nested_overrides(args: argparse.Namespace, prefixes: Iterable[str] = ()) -> dict[str, Any]:
    """``{section: {field: value}}`` from options with dest ``section.field`` (and top-level ones named in prefixes)."""
    out: dict[str, Any] = {}
    for dest, value in vars(args).items():
        section, dot, name = dest.partition(".")
        if dot:
            out.setdefault(section, {})[name] = value
        elif dest in prefixes:
            out[dest] = value
    return out


def option_types(sub: dict[str, argparse.Action], classes: Iterable[type]) -> dict[str, Any]:
    """Every option a file may set for a command, with its field type (None: a plain flag, converted as the flag would)."""
    types_: dict[str, Any] = {dest: None for dest in sub if dest not in ("help", "config", "preset", argparse.SUPPRESS)}
    for cls in classes:
        for name, tp in field_types(cls).items():
            if types_.get(name) is None:
                types_[name] = tp
    return types_


def read_option_file(path: str, preset: str | None, known: Iterable[str]) -> dict[str, Any]:
    """Flat option values from a YAML option file, keys normalised to field names and checked."""
    known = set(known)
    values = {}
    for key, value in load_config(path, preset, what="config").items():
        name = str(key).replace("-", "_")
        if name == "preset":
            raise ConfigError(f"{path}: preset: choose a preset with --preset (define them under presets:)")
        if name not in known:
            raise ConfigError(f"{path}: {key}: unknown option{suggest(name, known)}")
        values[name] = value
    return values


def parse_with_config(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse argv, then :func:`apply_config`."""
    return apply_config(parser, parser.parse_args(argv), argv)


def apply_config(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str] | None) -> argparse.Namespace:
    """Values from an option file (``--config``, see the module doc) replace what the command line
    left unset, defaults of plain flags included; ``argv`` is what ``args`` was parsed from (None:
    ``sys.argv[1:]``), to tell a flag given there from its default. Values are typed YAML, checked
    against their dataclass field exactly as in a scenario file (``skip_invalid: "false"`` is refused,
    not true); a plain flag that is no field is checked the same way against the type it stands for
    (:func:`flag_annotation`). Errors name the file and the option. Records what was set, on the
    command line or in the file, as ``args.options_given`` (read by :func:`given`). Scenario
    commands (bon, demo, rl) read their file themselves."""
    on_command_line = command_line_dests(parser, argv)
    args.options_given = on_command_line
    config_path = getattr(args, "config", None)
    if not (config_path and getattr(args, "config_holds_options", False)):
        return args
    actions = _subcommand_actions(parser, getattr(args, "command", None))
    types_ = option_types(actions, getattr(args, "option_classes", None) or ())
    values = read_option_file(config_path, getattr(args, "preset", None), types_)
    for key, value in values.items():
        where = f"{config_path}: {key}"
        # Every value in the file is checked, also those a flag overrides: a broken file is an error.
        if types_[key] is not None:
            value = convert(types_[key], value, where)  # typed YAML, exactly as in a scenario file
        elif key in actions:
            value = _flag_value(actions[key], value, where)  # a plain flag: typed as the field it stands for
        if key not in on_command_line:
            setattr(args, key, value)
    args.options_given = on_command_line | set(values)
    return args


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """``--config`` / ``--preset`` of the option-file commands (train, laplace, score, eval)."""
    parser.add_argument("--config", help="YAML option file: option: value pairs of this command (flags given here win); "
                        "may hold presets: {name: {option: value}}.")
    parser.add_argument("--preset", default=None, help="A preset of the --config file.")
    parser.set_defaults(config_holds_options=True)


def _subcommand_actions(parser: argparse.ArgumentParser, command: str | None) -> dict[str, argparse.Action]:
    """dest -> action of the subcommand's parser (or of ``parser`` itself when it has no subcommands)."""
    target = parser
    for action in parser._actions:  # argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction) and command in action.choices:
            target = action.choices[command]
    return {a.dest: a for a in target._actions}


def flag_annotation(action: argparse.Action) -> Any:
    """The field type a plain flag stands for, so that its option-file value goes through the one converter
    (:func:`bayesrm.config.convert`): a switch is a ``bool``, choices a ``Literal``, ``nargs='+'`` a list."""
    if action.nargs == 0:  # store_true / store_false / store_const: a switch
        return bool
    if action.choices is not None:
        inner: Any = typing.Literal[tuple(action.choices)]
    elif action.type is parse_bool:
        inner = bool
    elif action.type in (int, float):
        inner = action.type
    else:
        inner = str  # text, or the text a custom parser reads
    return list[inner] if action.nargs in ("+", "*") else inner


def _flag_value(action: argparse.Action, value: Any, where: str) -> Any:
    """An option-file value of a plain flag: typed as :func:`flag_annotation` says, then read by the flag's own parser."""
    value = convert(flag_annotation(action), value, where)
    if action.nargs == 0:  # a switch: what giving it (or not) stores
        return action.const if value else action.default
    parse = action.type
    if parse is None or parse in (int, float, str, parse_bool) or action.choices is not None:
        return value
    try:
        return [parse(v) for v in value] if isinstance(value, list) else parse(value)
    except (argparse.ArgumentTypeError, ValueError, TypeError) as err:
        raise ConfigError(f"{where}: {err}") from None
