"""`bayesrm rl`: PPO or RLOO fine-tuning of a LoRA policy against a conservative proxy reward.

Settings come from the ``rl:`` section of a scenario YAML file (see bayesrm.alignment.rl.RLConfig);
flags given here override it. Writes OUT/log.jsonl (one record a step), OUT/reward_vs_kl.png,
OUT/reward_vs_step.png, OUT/adapter (peft LoRA) and OUT/checkpoint (for --resume).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from bayesrm.cli.safety import add_trust_options, trust_kwargs



def add_parser(sub: argparse._SubParsersAction) -> None:
    from bayesrm.alignment.rl.config import RLConfig
    from bayesrm.cli.options import add_dataclass_options

    p = sub.add_parser("rl", help="RL fine-tuning (PPO / RLOO) against an uncertainty-penalised reward.", description=__doc__)
    p.add_argument("--config", required=True, help="Scenario YAML file with an 'rl:' section (RLConfig fields), or 'sentiment'.")
    p.add_argument("--preset", dest="rl_preset", default=None, help="A preset of the scenario file (e.g. rl-small-up).")
    p.add_argument("--out", dest="rl_out", default="runs/rl", metavar="DIR", help="Output directory (default: runs/rl).")
    p.add_argument("--resume", dest="rl_resume", action="store_true", help="Continue from OUT/checkpoint.")
    p.add_argument("--quiet", dest="rl_quiet", action="store_true", help="Do not print a line per step.")
    p.add_argument("--set", dest="rl_set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="Deprecated: use the flags below; still sets any rl field, e.g. reward_params={k: 2} (values parsed as YAML).")
    add_dataclass_options(p, RLConfig, prefix="rl", flag_prefix="", default_note="the file's rl section", title="rl: (override the scenario file's rl section)")
    add_trust_options(p)
    p.set_defaults(run=run)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """['kl_coef=0.1', 'target_modules=[q_proj, v_proj]'] -> {'kl_coef': 0.1, ...} (YAML values)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return out


def collect_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """--set KEY=VALUE pairs, then the generated rl flags that were given."""
    from bayesrm.cli.options import nested_overrides

    return {**parse_overrides(args.rl_set), **nested_overrides(args).get("rl", {})}


def run(args: argparse.Namespace) -> int:
    from bayesrm.alignment.rl import RLTrainer
    from bayesrm.rewards import parse_reward
    from bayesrm.data.prompts import prompt_source
    from bayesrm.evaluation.gold import make_judge
    from bayesrm.models.policy import load_policy
    from bayesrm.registry import load_scorer

    from bayesrm.scenarios.config import load_scenario

    overrides = collect_overrides(args)
    cfg = load_scenario(args.config, preset=args.rl_preset, overrides={"rl": overrides} if overrides else None).rl
    if cfg is None:
        raise ValueError(f"{args.config}: no 'rl:' section")
    for name in ("proxy", "prompts"):  # prompts: a .txt / .jsonl / .json file, or chitchat:N
        if getattr(cfg, name) is None:
            raise ValueError(f"{args.config}: rl.{name} is required")
    model, tokenizer = load_policy(cfg.policy, device=cfg.device)
    trainer = RLTrainer(
        cfg,
        model,
        tokenizer,
        proxy=([load_scorer(p, **trust_kwargs(args)) for p in cfg.proxy] if isinstance(cfg.proxy, list)
               else load_scorer(cfg.proxy, **trust_kwargs(args))),
        reward=parse_reward(cfg.reward, **cfg.reward_params),
        prompts=prompt_source(cfg.prompts, seed=cfg.seed),
        out_dir=args.rl_out,
        gold=make_judge(cfg.gold) if cfg.gold else None,
    )
    out = Path(args.rl_out)
    if args.rl_resume:
        step = trainer.resume()
        print(f"resumed from {out / 'checkpoint'} at step {step}")
    elif (out / "log.jsonl").exists():
        raise ValueError(f"{out}: already holds a run; pass --resume to continue it or choose another --out")
    (out / "rl_config.yaml").parent.mkdir(parents=True, exist_ok=True)
    (out / "rl_config.yaml").write_text(yaml.safe_dump({"rl": cfg.to_dict()}, sort_keys=False))
    trainer.train(progress=not args.rl_quiet)
    print(f"done: {trainer.step} steps -> {out}")
    return 0
