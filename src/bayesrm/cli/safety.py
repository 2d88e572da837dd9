"""Options that decide what a loaded checkpoint may do, and what may happen to an existing --out.

Shared by the subcommands that load saved models (score, eval, laplace, rl) and those that write
runs (train, bon). Declared once here so every command spells them the same way.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_trust_options(parser: argparse.ArgumentParser) -> None:
    """--trust-remote-code and --allow-external-paths (both off: a checkpoint can neither run code nor reach outside itself)."""
    group = parser.add_argument_group("checkpoint trust")
    group.add_argument("--trust-remote-code", action="store_true", default=False,
                       help="Let transformers run custom model code from the backbone a checkpoint names (off: such a "
                            "backbone fails to load). Only for checkpoints and backbones you trust.")
    group.add_argument("--allow-external-paths", action="store_true", default=False,
                       help="Let a checkpoint name sub-checkpoints outside its own directory ('..', absolute paths, symlinks).")


def trust_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of bayesrm.registry.load_scorer chosen on the command line."""
    return {"trust_remote_code": bool(getattr(args, "trust_remote_code", False)),
            "allow_external_paths": bool(getattr(args, "allow_external_paths", False))}


def add_output_options(parser: argparse.ArgumentParser, resume_help: str) -> None:
    """--overwrite and --resume for a command writing a run into --out."""
    group = parser.add_argument_group("existing output")
    group.add_argument("--overwrite", action="store_true", default=False,
                       help="Write into an --out that holds a different run (its stale outputs are redone; "
                            "files bayesrm did not write are never deleted).")
    group.add_argument("--resume", action="store_true", default=False, help=resume_help)
