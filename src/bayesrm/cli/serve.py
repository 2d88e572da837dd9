"""`bayesrm serve`: an HTTP reward server (OpenRLHF /get_reward, vLLM-style /classify for verl, /score)."""

from __future__ import annotations

import argparse

from bayesrm.cli.options import add_config_options, add_dataclass_options, build_dataclass
from bayesrm.serve.config import ServeConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="Serve conservative rewards of a saved scorer over HTTP.", description=__doc__)
    add_config_options(p)
    p.add_argument("--model", required=True, help="A directory saved by bayesrm (any kind).")
    p.add_argument("--reward", default="mean", help="Conservative reward spec, e.g. 'up:beta2=1' or 'std:k=2|log_sigmoid'.")
    add_dataclass_options(p, ServeConfig, title="server")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bayesrm.serve.server import build_app, serve

    config = build_dataclass(ServeConfig, args)
    serve(build_app(args.model, args.reward, config), config)
    return 0
