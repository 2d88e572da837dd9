"""`bayesrm bon`: run a best-of-n overoptimization scenario (sample, label, train proxies, score, report).

--config names a scenario file (or a built-in scenario); --preset picks one of its presets; the
section flags (--bon-prompts, --sampling-temperature, --training-learning-rate, ...) override
single fields of it, and are checked with the file.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SECTIONS = ("prompts", "sampling", "preferences", "model", "training", "bon")
"""Scenario sections with generated --<section>-<field> flags (training: the TrainingArguments `bayesrm train` exposes)."""
TOP_LEVEL = ("name", "seed", "policy", "gold", "device")


def add_arguments(p: argparse.ArgumentParser, default_out: str | None, default_config: str = "sentiment") -> None:
    from bayesrm.cli.options import add_dataclass_options
    from bayesrm.cli.train import TRAINING_OPTIONS
    from bayesrm.config import field_types
    from bayesrm.scenarios.config import ScenarioConfig

    p.add_argument("--config", default=default_config,
                   help=f"Scenario YAML, or the name of a built-in one ('helpful', 'sentiment'; default {default_config!r}).")
    p.add_argument("--preset", default=None, help="A preset of the scenario (e.g. 'full' for the larger figure).")
    p.add_argument("--out", default=default_out, help="Output directory (default: runs/<scenario>[-<preset>]). Re-running resumes.")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="Run once per seed (labels, training, tie-breaking) into OUT/seed<S>; samples are shared.")
    p.add_argument("--samples", default=None,
                   help="Sample cache directory (default: OUT/samples); point several runs at one cache to share samples.")
    p.add_argument("--no-progress", action="store_true", help="No progress bars (logs only).")
    add_dataclass_options(p, ScenarioConfig, only=TOP_LEVEL, title="scenario (override the file)", default_note="the file's")
    types = field_types(ScenarioConfig)
    for section in SECTIONS:
        add_dataclass_options(p, types[section], only=TRAINING_OPTIONS if section == "training" else None, prefix=section,
                              exclude=("seed", "output_dir") if section == "training" else (), title=f"scenario {section}:", default_note="the file's")
    p.add_argument("--overwrite", action="store_true",
                   help="OUT holds a run made with other settings: redo the stages whose settings changed (and what depends "
                        "on them) instead of stopping. Without it such a rerun is refused; an unchanged rerun resumes.")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bon", help="Best-of-n overoptimization experiment from a scenario file.", description=__doc__)
    add_arguments(p, None)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bayesrm.cli.options import nested_overrides
    from bayesrm.scenarios.config import load_scenario
    from bayesrm.scenarios.stages import safe_name
    from bayesrm.scenarios.summary import run_scenario

    config = load_scenario(args.config, preset=args.preset, overrides=nested_overrides(args, TOP_LEVEL))
    if args.out is None:
        safe_name(config.name, "scenario name")  # it names the default output directory
        if args.preset:
            safe_name(args.preset, "preset name")
    out = Path(args.out or f"runs/{config.name}{'-' + args.preset if args.preset else ''}")
    for report in run_scenario(config, out, args.seeds, progress=not args.no_progress, cache_dir=args.samples,
                               overwrite=args.overwrite):
        print(f"report: {report}")
    return 0
