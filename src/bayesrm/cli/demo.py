"""`bayesrm demo`: the embedded `helpful` scenario end to end (SmolLM2 policy, the embedded gold reward
model `rm:helpful`, MiniLM proxies; instructions from AlpacaEval / Arena-Hard in ../shared/data).

Samples responses from SmolLM2-135M-Instruct, labels preference pairs with the gold reward model,
trains MAP, LoRA-ensemble and Laplace proxies, chooses each proxy's penalty on held-out prompts,
runs best-of-n against each and writes a report with plots and Gao et al.'s scaling-law fit.
`--config sentiment` runs the VADER-sentiment scenario instead; `--preset full` the full study.
A re-run reuses every cached stage.
"""

from __future__ import annotations

import argparse

from bayesrm.cli import bon


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="Run the embedded helpful scenario end to end and write its report.", description=__doc__)
    bon.add_arguments(p, None, default_config="helpful")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.out is None:  # runs/demo stays the sentiment demo's folder (the RL presets read its proxies)
        from pathlib import Path

        name = Path(args.config).stem
        args.out = "runs/demo" if name == "sentiment" else f"runs/demo-{name}" + (f"-{args.preset}" if args.preset else "")
    code = bon.run(args)
    print("open the report above (markdown with PNG plots beside it)")
    return code
