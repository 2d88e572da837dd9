"""`bayesrm laplace`: fit a Laplace-LoRA posterior to a saved reward model on preference pairs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


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
    p.add_argument("--model", required=True, help="Directory of a saved reward model (bayesrm train).")
    p.add_argument("--data", required=True, help="Preference file the model was trained on (any format load_preferences reads).")
    p.add_argument("--out", default=None, help="Output directory of the posterior (default: MODEL-laplace).")
    p.add_argument("--prior-precision", type=_prior, default="auto", help="'auto' maximises the Laplace evidence, or a fixed lambda.")
    p.add_argument("--batch-size", type=int, default=16, help="Pairs per curvature batch.")
    p.add_argument("--max-pairs", type=int, default=None, help="Use at most this many pairs.")
    p.add_argument("--low-rank", type=int, default=16, help="Eigenpairs kept per large K-FAC factor (0 keeps all).")
    p.add_argument("--include-head", action="store_true", help="Also treat the reward head as Bayesian.")
    p.add_argument("--kfac", choices=("pair", "expand"), default="pair", help="K-FAC factor construction (see docs).")
    p.add_argument("--skip-invalid", action="store_true", help="Skip invalid records instead of stopping.")
    p.add_argument("--device", default="cpu", help="torch device.")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bayesrm.data.loading import load_preferences
    from bayesrm.models.reward_model import RewardModel
    from bayesrm.uncertainty.laplace import LaplaceLoRA

    if args.batch_size < 1 or (args.max_pairs is not None and args.max_pairs < 1):
        raise ValueError("--batch-size and --max-pairs must be positive")
    result = load_preferences(args.data, skip_invalid=args.skip_invalid)
    if result.skipped:
        print(result.summary(), file=sys.stderr)
    pairs = result.pairs[: args.max_pairs] if args.max_pairs else result.pairs
    model = RewardModel.from_pretrained(args.model, device=args.device)
    fixed = args.prior_precision != "auto"
    la = LaplaceLoRA(
        model,
        include_head=args.include_head,
        low_rank=args.low_rank or None,
        prior_precision=args.prior_precision if fixed else 1.0,
        kfac=args.kfac,
    )
    la.fit(pairs, batch_size=args.batch_size, progress=True)
    if not fixed:
        la.optimize_prior_precision()
    out = Path(args.out) if args.out else Path(str(Path(args.model)).rstrip("/") + "-laplace")
    la.save_pretrained(out)
    print(
        f"Laplace-LoRA on {la.n_data} pairs: P = {la.n_params} parameters, prior precision {la.prior_precision:.4g} "
        f"({'fixed' if fixed else 'evidence-optimal'}), log evidence {la.log_marginal_likelihood():.2f}, "
        f"factors {la.posterior_nbytes() / 1e6:.2f} MB -> {out}",
        file=sys.stderr,
    )
    return 0
