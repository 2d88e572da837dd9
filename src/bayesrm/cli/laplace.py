"""`bayesrm laplace`: fit a Laplace-LoRA posterior to a saved reward model on preference pairs.

By default the posterior is fitted on the training part of the split the model was trained with
(its data options are saved in MODEL/config.json); a conflicting split option is refused.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from bayesrm.cli.common import DATA_OPTIONS_KEY, add_data_options, data_options, load_split
from bayesrm.cli.options import add_config_options, add_dataclass_options, build_dataclass, given
from bayesrm.cli.safety import add_trust_options, trust_kwargs
from bayesrm.config import to_mapping
from bayesrm.uncertainty.laplace.posterior import LaplaceConfig


@dataclass
class LaplaceOptions:
    """Which model, where the posterior goes, and how it is fitted."""

    model: str
    """A saved reward model (bayesrm train), or a LoRA / independent ensemble (then: Laplace on each member)."""
    out: str | None = None
    """Output directory of the posterior (default: MODEL-laplace)."""
    fit_prior: bool | None = None
    """Choose the prior precision by maximising the Laplace evidence (default: yes, unless --prior-precision gives a number)."""
    batch_size: int = 16
    """Pairs per curvature batch."""
    device: str = "cpu"
    """torch device."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {self.batch_size}")


def _prior(text: str) -> str | float:
    """A positive number, or 'auto' (kept for older scripts: the same as leaving it out)."""
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'auto' or a positive number, got {text!r}") from None


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("laplace", help="Fit a Laplace-LoRA posterior (K-FAC) to a saved reward model.", description=__doc__)
    add_config_options(p)
    add_dataclass_options(p, LaplaceOptions, title="model and fit")
    add_dataclass_options(p, LaplaceConfig, title="posterior", parsers={"prior_precision": _prior})
    add_data_options(p)
    add_trust_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bayesrm.models.checkpoint import update_meta
    from bayesrm.models.reward_model import RewardModel
    from bayesrm.registry import load_scorer
    from bayesrm.uncertainty.laplace import LaplaceEnsemble, LaplaceLoRA

    opts: LaplaceOptions = build_dataclass(LaplaceOptions, args)
    if getattr(args, "prior_precision", None) == "auto":
        del args.prior_precision  # 'auto' is the default: maximise the evidence
    if getattr(args, "low_rank", None) == 0:
        args.low_rank = None  # older scripts: 0 kept every eigenpair
    config: LaplaceConfig = build_dataclass(LaplaceConfig, args)
    fit_prior = opts.fit_prior if opts.fit_prior is not None else not given(args, "prior_precision")
    data = data_options(args, opts.model)
    pairs = load_split(data)["train"]  # the split the model was trained on
    model = load_scorer(opts.model, device=opts.device, **trust_kwargs(args))
    options = to_mapping(config)
    if isinstance(model, RewardModel):
        la = LaplaceLoRA(model, **options)
    elif hasattr(model, "members_as_reward_models") or hasattr(model, "models"):
        la = LaplaceEnsemble.from_ensemble(model, **options)
    else:
        raise ValueError(f"{opts.model}: holds a {type(model).__name__}; Laplace needs a reward model or a LoRA / independent ensemble")
    la.fit(pairs, batch_size=opts.batch_size, progress=True)
    if fit_prior:
        la.optimize_prior_precision()
    out = Path(opts.out) if opts.out else Path(str(Path(opts.model)).rstrip("/") + "-laplace")
    la.save_pretrained(out)
    update_meta(out, **{DATA_OPTIONS_KEY: to_mapping(data)})
    posteriors = getattr(la, "posteriors", [la])
    for k, post in enumerate(posteriors):
        name = f"member {k}: " if len(posteriors) > 1 else ""
        print(f"{name}Laplace-LoRA on {post.n_data} pairs: P = {post.n_params} parameters, prior precision "
              f"{post.prior_precision:.4g} ({'evidence-optimal' if fit_prior else 'fixed'}), log evidence "
              f"{post.log_marginal_likelihood():.2f}, factors {post.posterior_nbytes() / 1e6:.2f} MB", file=sys.stderr)
    print(f"saved -> {out}", file=sys.stderr)
    return 0
