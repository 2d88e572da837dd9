"""`bayesrm laplace`: fit a Laplace-LoRA posterior (or, with --last-layer, a Bayesian last layer) to a saved reward model.

By default the posterior is fitted on the training part of the split the model was trained with
(its data options are saved in MODEL/config.json); a conflicting split option is refused. An
ensemble gets one posterior per member; when it was trained with --bootstrap, member k's is fitted
on its own bootstrap replicate of those pairs (each pair as often as member k saw it).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

from bayesrm.cli.common import DATA_OPTIONS_KEY, add_data_options, data_options, load_split, saved_data_options
from bayesrm.cli.options import add_config_options, add_dataclass_options, build_dataclass, given
from bayesrm.cli.safety import add_trust_options, trust_kwargs
from bayesrm.config import to_mapping
from bayesrm.uncertainty.laplace.posterior import LaplaceConfig


@dataclass
class LaplaceOptions:
    """Which model, where the posterior goes, and how it is fitted."""

    model: str
    """A saved reward model (bayesrm train), or a LoRA / independent ensemble (then: Laplace on each member)."""
    last_layer: bool = False
    """Last-layer Laplace instead: a closed-form Bayesian linear head on the frozen features (reward models only; of the posterior options only --prior-precision applies)."""
    bootstrap: bool | None = None
    """Ensembles: fit member k on its own bootstrap replicate of the pairs (default: yes when the ensemble was trained with --bootstrap and the pairs are its training split)."""
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
    p = sub.add_parser("laplace", help="Fit a Laplace-LoRA posterior (K-FAC) or a last-layer Laplace to a saved reward model.",
                       description=__doc__)
    add_config_options(p)
    add_dataclass_options(p, LaplaceOptions, title="model and fit")
    add_dataclass_options(p, LaplaceConfig, title="posterior", parsers={"prior_precision": _prior})
    add_data_options(p)
    add_trust_options(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from bayesrm.models.checkpoint import update_meta
    from bayesrm.registry import load_scorer

    opts: LaplaceOptions = build_dataclass(LaplaceOptions, args)
    if getattr(args, "prior_precision", None) == "auto":
        del args.prior_precision  # 'auto' is the default: maximise the evidence
    if getattr(args, "low_rank", None) == 0:
        args.low_rank = None  # older scripts: 0 kept every eigenpair
    config: LaplaceConfig = build_dataclass(LaplaceConfig, args)
    fit_prior = opts.fit_prior if opts.fit_prior is not None else not given(args, "prior_precision")
    if opts.last_layer:
        other = [f.name for f in dataclasses.fields(LaplaceConfig) if f.name != "prior_precision" and given(args, f.name)]
        if other or opts.bootstrap:
            names = ", ".join("--" + n.replace("_", "-") for n in other + (["bootstrap"] if opts.bootstrap else []))
            raise ValueError(f"{names}: Laplace-LoRA options, not used by --last-layer (only --prior-precision is)")
    data = data_options(args, opts.model)
    pairs = load_split(data)["train"]  # the split the model was trained on
    model = load_scorer(opts.model, device=opts.device, **trust_kwargs(args))
    own_split = data == saved_data_options(opts.model)
    if opts.last_layer:
        la = _last_layer(model, opts, config)
    else:
        la = _laplace_lora(model, opts, config)
    if hasattr(la, "posteriors"):
        la.fit(pairs, batch_size=opts.batch_size, progress=True, replicates=_replicates(model, pairs, opts, own_split))
    else:
        la.fit(pairs, batch_size=opts.batch_size, progress=True)
    if fit_prior:
        la.optimize_prior_precision()
    out = Path(opts.out) if opts.out else Path(str(Path(opts.model)).rstrip("/") + ("-last-layer" if opts.last_layer else "-laplace"))
    la.save_pretrained(out)
    update_meta(out, **{DATA_OPTIONS_KEY: to_mapping(data)})
    how = "evidence-optimal" if fit_prior else "fixed"
    if opts.last_layer:
        print(f"last-layer Laplace on {la.n_data} pairs: H = {la.ggn.shape[0]} head weights, prior precision "
              f"{la.prior_precision:.4g} ({how}), log evidence {la.log_evidence():.2f}", file=sys.stderr)
    posteriors = getattr(la, "posteriors", [la]) if not opts.last_layer else []
    for k, post in enumerate(posteriors):
        name = f"member {k}: " if len(posteriors) > 1 else ""
        print(f"{name}Laplace-LoRA on {post.n_data} pairs: P = {post.n_params} parameters, prior precision "
              f"{post.prior_precision:.4g} ({how}), log evidence "
              f"{post.log_marginal_likelihood():.2f}, factors {post.posterior_nbytes() / 1e6:.2f} MB", file=sys.stderr)
    print(f"saved -> {out}", file=sys.stderr)
    return 0


def _laplace_lora(model: object, opts: LaplaceOptions, config: LaplaceConfig) -> object:
    from bayesrm.models.reward_model import RewardModel
    from bayesrm.uncertainty.laplace import LaplaceEnsemble, LaplaceLoRA

    options = to_mapping(config)
    if isinstance(model, RewardModel):
        if opts.bootstrap:
            raise ValueError(f"--bootstrap applies to ensembles; {opts.model} holds one reward model")
        return LaplaceLoRA(model, **options)
    if hasattr(model, "members_as_reward_models") or hasattr(model, "models"):
        return LaplaceEnsemble.from_ensemble(model, **options)
    raise ValueError(f"{opts.model}: holds a {type(model).__name__}; Laplace needs a reward model or a LoRA / independent ensemble")


def _last_layer(model: object, opts: LaplaceOptions, config: LaplaceConfig) -> object:
    from bayesrm.models.reward_model import RewardModel
    from bayesrm.uncertainty.last_layer import LastLayerLaplace

    if not isinstance(model, RewardModel):
        raise ValueError(f"{opts.model}: holds a {type(model).__name__}; --last-layer needs a reward model (bayesrm train --method map or warm)")
    return LastLayerLaplace(model, prior_precision=config.prior_precision)


def _replicates(model: object, pairs: list, opts: LaplaceOptions, own_split: bool) -> list | None:
    """Each member's bootstrap replicate of ``pairs`` when the ensemble was trained with bootstrap (see --bootstrap)."""
    trained_with = bool(getattr(getattr(model, "ensemble", None), "bootstrap", False))
    if opts.bootstrap is False or (opts.bootstrap is None and not trained_with):
        return None
    if not trained_with:
        raise ValueError(f"--bootstrap: {opts.model} was not trained with bootstrap replicates")
    if not own_split:
        if opts.bootstrap:
            raise ValueError("--bootstrap: the replicates index the model's own training split, but other data are given")
        print("note: fitting every member on all given pairs (not the model's training split, so not its bootstrap replicates)",
              file=sys.stderr)
        return None
    replicates = model.bootstrap_replicates(pairs)  # type: ignore[attr-defined]
    print(f"bootstrap: member k fitted on its own replicate ({', '.join(str(len(r)) for r in replicates)} pairs)", file=sys.stderr)
    return replicates
