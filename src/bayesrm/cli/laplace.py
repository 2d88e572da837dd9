"""`bayesrm laplace`: fit a Laplace-LoRA posterior to a saved reward model on preference pairs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bayesrm.cli.safety import add_trust_options, trust_kwargs

from bayesrm.cli.common import add_data_options, load_split


def _prior(text: str) -> str | float:
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"prior precision must be positive, got {text}")
    return value


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("laplace", help="Fit a Laplace-LoRA posterior (K-FAC) to a saved reward model.", description=__doc__)
    p.add_argument("--config", help="YAML file of option: value defaults (flags given here win).")
    p.add_argument("--model", required=True,
                   help="A saved reward model (bayesrm train), or a LoRA / independent ensemble (then: Laplace on each member).")
    p.add_argument("--out", default=None, help="Output directory of the posterior (default: MODEL-laplace).")
    p.add_argument("--prior-precision", type=_prior, default="auto", help="'auto' maximises the Laplace evidence, or a fixed lambda.")
    p.add_argument("--batch-size", type=int, default=16, help="Pairs per curvature batch.")
    p.add_argument("--low-rank", type=int, default=16, help="Eigenpairs kept per large K-FAC factor (0 keeps all).")
    p.add_argument("--include-head", action="store_true", help="Also treat the reward head as Bayesian.")
    p.add_argument("--kfac", choices=("pair", "expand"), default="pair", help="K-FAC factor construction (see docs).")
    p.add_argument("--device", default="cpu", help="torch device.")
    add_data_options(p)
    add_trust_options(p)
    p.set_defaults(run=run, config_holds_options=True)


def run(args: argparse.Namespace) -> int:
    from bayesrm.models.reward_model import RewardModel
    from bayesrm.registry import load_scorer
    from bayesrm.uncertainty.laplace import LaplaceEnsemble, LaplaceLoRA

    if args.batch_size < 1:
        raise ValueError("--batch-size must be positive")
    pairs = load_split(args)["train"]  # the split `bayesrm train` trained on (same data options)
    model = load_scorer(args.model, device=args.device, **trust_kwargs(args))
    fixed = args.prior_precision != "auto"
    options = dict(include_head=args.include_head, low_rank=args.low_rank or None,
                   prior_precision=args.prior_precision if fixed else 1.0, kfac=args.kfac)
    if isinstance(model, RewardModel):
        la = LaplaceLoRA(model, **options)
    elif hasattr(model, "members_as_reward_models") or hasattr(model, "models"):
        la = LaplaceEnsemble.from_ensemble(model, **options)
    else:
        raise ValueError(f"{args.model}: holds a {type(model).__name__}; Laplace needs a reward model or a LoRA / independent ensemble")
    la.fit(pairs, batch_size=args.batch_size, progress=True)
    if not fixed:
        la.optimize_prior_precision()
    out = Path(args.out) if args.out else Path(str(Path(args.model)).rstrip("/") + "-laplace")
    la.save_pretrained(out)
    posteriors = getattr(la, "posteriors", [la])
    for k, post in enumerate(posteriors):
        name = f"member {k}: " if len(posteriors) > 1 else ""
        print(f"{name}Laplace-LoRA on {post.n_data} pairs: P = {post.n_params} parameters, prior precision "
              f"{post.prior_precision:.4g} ({'fixed' if fixed else 'evidence-optimal'}), log evidence "
              f"{post.log_marginal_likelihood():.2f}, factors {post.posterior_nbytes() / 1e6:.2f} MB", file=sys.stderr)
    print(f"saved -> {out}", file=sys.stderr)
    return 0
