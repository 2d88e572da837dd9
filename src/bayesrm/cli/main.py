"""`bayesrm` command line: one module per subcommand, each with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from bayesrm import __version__

SUBCOMMANDS = ["train", "laplace", "score", "eval", "bon", "report", "rl", "serve", "demo"]
"""Modules under bayesrm.cli, in the order --help lists them."""

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError)
"""Errors caused by the user's input; shown as one line (DataError and CheckpointError are ValueErrors)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bayesrm", description="Uncertainty-aware reward models for LLM alignment.")
    parser.add_argument("--version", action="version", version=f"bayesrm {__version__}")
    parser.add_argument("--debug", dest="show_traceback", action="store_true", help="Show full tracebacks instead of one-line errors.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"bayesrm.cli.{name}").add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from bayesrm.cli.options import apply_config

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        apply_config(parser, args)  # a missing or bad --config file is a user error too
        return int(args.run(args) or 0)
    except USER_ERRORS as err:
        if args.show_traceback:
            raise
        message = f"missing key {err.args[0]!r}" if isinstance(err, KeyError) and err.args else err
        print(f"bayesrm {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bayesrm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
