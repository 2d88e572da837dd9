"""`bayesrm` command line: one module per subcommand, each with ``add_parser`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import warnings

from bayesrm import __version__

SUBCOMMANDS = ["train", "laplace", "score", "eval", "bon", "report", "rl", "serve", "demo"]
"""Modules under bayesrm.cli, in the order --help lists them."""

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError)
"""Errors caused by the user's input; shown as one line (DataError and CheckpointError are ValueErrors)."""


THIRD_PARTY = r"(transformers|torch|peft|accelerate|datasets|huggingface_hub|trl|tokenizers|gguf)(\.|$)"
"""Libraries whose deprecation notices are theirs to fix, not the user's; hidden unless --debug."""


def quiet_warnings() -> None:
    """Filter the known third-party deprecation / future warnings (they flood the console between progress bars)."""
    for category in (FutureWarning, DeprecationWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=THIRD_PARTY)
    warnings.filterwarnings("ignore", message=r".*(is deprecated|will be removed|deprecated and will).*", category=UserWarning, module=THIRD_PARTY)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # load reports of the unused pooler / new reward head: by design
    hf_logging.disable_progress_bar()  # 'Loading weights' bars of every backbone load


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
    if "--debug" not in (sys.argv[1:] if argv is None else argv):
        quiet_warnings()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from bayesrm.cli.options import apply_config

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(apply_config(parser, args, argv).run(args) or 0)
    except USER_ERRORS as err:
        if args.show_traceback:
            raise
        message = err
        if isinstance(err, KeyError) and err.args:  # KeyError('model') reads 'missing key 'model''
            key = err.args[0]
            message = key if isinstance(key, str) and " " in key else f"missing key {key!r}"
        print(f"bayesrm {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"bayesrm {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
