"""`bayesrm demo`: the embedded `sentiment` scenario end to end (SmolLM2 policy, VADER gold, MiniLM proxies).

Samples responses from SmolLM2-135M-Instruct, labels preference pairs with VADER, trains MAP,
LoRA-ensemble, diverse-ensemble and Laplace proxies, runs best-of-n against each with mean / std /
var rewards, and writes a report with plots. A re-run reuses every cached stage.
"""

from __future__ import annotations

import argparse

from bayesrm.cli import bon


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="Run the embedded sentiment scenario end to end and write its report.", description=__doc__)
    bon.add_arguments(p, "runs/demo")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    code = bon.run(args)
    print("open the report above (markdown with PNG plots beside it)")
    return code
