"""Training one scenario proxy: a reward model / ensemble by its method, or a Laplace posterior on a trained base."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from bayesrm.data.schema import PreferencePair
from bayesrm.scenarios.config import ProxyConfig, ScenarioConfig


def train_proxy(config: ScenarioConfig, spec: ProxyConfig, train: list[PreferencePair], directory: Path,
                base: Any = None, progress: bool = True, log: Callable[[str], None] = print, label: str | None = None,
                device: str = "cpu") -> Any:
    """A scorer trained as ``spec`` says on ``train`` (checkpoints under ``directory/checkpoints``);
    a 'laplace' proxy is fitted on ``base``, its trained base proxy (on its device). ``label`` names it in log
    lines; ``device`` (a resolved name) decides whether the Trainer may use CUDA."""
    from bayesrm.uncertainty.factory import train_model

    c = config
    if spec.method == "laplace":
        from bayesrm.uncertainty.laplace.posterior import LaplaceLoRA

        laplace = LaplaceLoRA(base, **dataclasses.asdict(spec.laplace))
        laplace.fit(train, progress=progress)
        if spec.fit_prior:
            log(f"{label or spec.name}: prior precision {laplace.optimize_prior_precision():.3g} (max. marginal likelihood)")
        return laplace
    training = dataclasses.replace(c.training, seed=c.seed, use_cpu=c.training.use_cpu or not device.startswith("cuda"),
                                   output_dir=str(Path(directory) / "checkpoints"), disable_tqdm=not progress)
    e = spec.ensemble
    return train_model(spec.method, c.model, train, training, members=e.members, diversity=e.diversity,
                       top_layers=e.top_layers, seed=c.seed, bootstrap=e.bootstrap)
