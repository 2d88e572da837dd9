"""Scenario configuration: one YAML file fixes prompts, policy, gold judge, preference data,
proxies and the best-of-n settings (DESIGN.md section 4). Copy ``sentiment.yaml`` and swap in
your own prompts, policy, gold and proxies.

A YAML may carry ``presets: {name: {overrides}}``; ``load_scenario(path, preset=name)`` deep-merges
the overrides into the base settings.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from bayesrm.alignment.rl.config import RLConfig
from bayesrm.config import ConfigError, from_mapping, load_config
from bayesrm.generation.sampler import SamplingConfig
from bayesrm.models.device import check_device
from bayesrm.models.reward_model import RewardModelConfig
from bayesrm.training.trainer import RewardTrainingConfig
from bayesrm.uncertainty.base import EnsembleConfig
from bayesrm.uncertainty.factory import Method
from bayesrm.uncertainty.laplace.posterior import LaplaceConfig

BUILTIN = ("helpful", "sentiment")
ProxyMethod = Literal[Method, "laplace"]
"""A proxy is trained by one of the factory's methods, or is a Laplace posterior on a trained map proxy."""
ENSEMBLE_KEYS = ("members", "top_layers", "diversity", "bootstrap")
LAPLACE_KEYS = ("include_head", "low_rank", "kfac", "prior_precision")
RUNNER_OWNED_TRAINING = {"seed": "set the scenario's top-level seed (it seeds training)",
                         "output_dir": "the runner trains into OUT/proxies/<name>/checkpoints"}


@dataclass
class PromptConfig:
    """Where prompts come from. Preference-data prompts and best-of-n prompts never overlap."""

    source: str | list[str] = "chitchat"
    """'chitchat' (real chat messages, package chitchat-dataset), a JSONL / JSON / TXT prompt file, or a
    list of prompt files (pooled, duplicates dropped). Relative paths are read from the working directory."""
    field: str | None = None
    """Field holding the prompt in a JSONL / JSON file (e.g. 'instruction')."""
    min_words: int = 4
    """chitchat: shortest message kept, in words."""
    max_words: int = 30
    """chitchat: longest message kept, in words."""
    file_max_words: int | None = None
    """Prompt files: drop prompts longer than this many words (None keeps every prompt)."""
    seed: int = 0
    """Seeds which prompts are drawn; kept apart from the scenario seed so that runs with several
    seeds share prompts and samples."""


@dataclass
class PreferenceConfig:
    """How gold-labelled preference pairs are made from policy samples (Gao et al.'s synthetic-gold protocol)."""

    prompts: int = 150
    """Prompts whose samples make the training pairs."""
    samples_per_prompt: int = 4
    """Policy samples per training prompt; every distinct pair of them becomes a preference pair."""
    label_temperature: float = 0.25
    """Bradley-Terry labels from gold: P(a preferred to b) = sigmoid((gold_a - gold_b) / T); 0 = hard labels
    (the gold order, ties skipped), as Coste et al."""
    label_noise: float = 0.0
    """Probability of flipping each label after sampling it."""
    validation_fraction: float = 0.2
    """Held-out pairs (split by prompt) on which proxies report accuracy / ECE."""
    max_pairs: int | None = None
    """Train on a seeded random subset of this many pairs (a weaker, more exploitable proxy); None uses all."""

    def __post_init__(self) -> None:
        if self.max_pairs is not None and self.max_pairs < 1:
            raise ValueError(f"max_pairs must be >= 1, or null for all pairs; got {self.max_pairs}")


@dataclass
class ProxyConfig:
    """One proxy reward model trained on the gold-labelled pairs.

    The flat form of older scenario files (``{name: e, method: lora-ensemble, members: 5}``,
    ``prior_precision: 1.0``) is still read: ensemble keys go to ``ensemble``, Laplace keys to
    ``laplace``, and a given ``prior_precision`` fixes the prior (``fit_prior: false``).
    """

    name: str = "map"
    """Label used in reports and file names."""
    method: ProxyMethod = "map"
    """A training method (bayesrm.uncertainty.factory.METHODS) or 'laplace' (a K-FAC posterior on a trained map proxy)."""
    base: str | None = None
    """laplace: name of the map proxy the posterior is fitted on."""
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    """Ensemble methods: members, top_layers, diversity, bootstrap (its seed is the scenario seed)."""
    laplace: LaplaceConfig = field(default_factory=LaplaceConfig)
    """laplace: the posterior's settings (include_head, low_rank, kfac, prior_precision)."""
    fit_prior: bool = True
    """laplace: choose the prior precision by maximising the marginal likelihood; false keeps laplace.prior_precision."""

    @classmethod
    def prepare_mapping(cls, data: dict[str, Any], where: str) -> dict[str, Any]:
        """Move the flat keys of older files into ``ensemble`` / ``laplace``."""
        for section, keys in (("ensemble", ENSEMBLE_KEYS), ("laplace", LAPLACE_KEYS)):
            flat = {k: data.pop(k) for k in keys if k in data}
            if "prior_precision" in flat:
                if flat["prior_precision"] is None:
                    del flat["prior_precision"]
                else:
                    data.setdefault("fit_prior", False)
            if flat:
                nested = data.get(section) or {}
                if not isinstance(nested, dict):
                    raise ConfigError(f"{where}.{section}: expected a mapping, got {type(nested).__name__}")
                data[section] = {**flat, **nested}
        return data


@dataclass
class BoNConfig:
    """Best-of-n evaluation settings."""

    prompts: int = 16
    """Prompts for best-of-n (disjoint from the preference-data prompts)."""
    n_samples: int = 32
    """N samples per prompt, drawn once; E[gold of best-of-n] is estimated for every n <= N."""
    ns: list[int] | None = None
    """The n values reported; None: 1, 2, 4, ... up to N."""
    rewards: list[str] = field(default_factory=lambda: ["mean", "zscore|std:k=1", "zscore|std:k=2", "zscore|var:k=1"])
    """Conservative rewards (bayesrm.rewards specs) each proxy selects with."""
    n_boot: int = 1000
    """Bootstrap resamples over prompts for the confidence bands."""
    selection_prompts: int = 0
    """Penalty-selection prompts (disjoint from the preference and best-of-n prompts), N samples each:
    each proxy's conservative reward (e.g. its k) is chosen on them, never on the best-of-n prompts. 0: off."""


@dataclass
class TwoPropertyConfig:
    """The logical-AND variant: two gold properties, one proxy per property, summed rewards."""

    gold: str = "textblob:subjectivity"
    """The second gold judge."""
    sign: float = -1.0
    """Multiplies the second gold (-1: lower subjectivity = more objective is better)."""
    thresholds: list[float] = field(default_factory=lambda: [0.05, -0.5])
    """A pick satisfies a property when (signed) gold >= threshold: VADER >= 0.05 is 'positive', -subjectivity >= -0.5 'objective'."""
    quantile: float = 0.85
    """Per-prompt reference quantile of the log-sigmoid transform."""
    threshold_quantile: float | None = None
    """If set, each property's threshold is this quantile (0.5: the median) of its signed gold over the
    preference-prompt samples, chosen before any best-of-n prompt is looked at; ``thresholds`` is then unused."""

    def __post_init__(self) -> None:
        if len(self.thresholds) != 2:
            raise ValueError(f"thresholds: expected one per property (2), got {self.thresholds}")
        if self.threshold_quantile is not None and not 0 <= self.threshold_quantile <= 1:
            raise ValueError(f"threshold_quantile: must be in [0, 1], got {self.threshold_quantile}")
        if not 0 <= self.quantile <= 1:
            raise ValueError(f"quantile: must be in [0, 1], got {self.quantile}")


@dataclass
class ScenarioConfig:
    """A complete best-of-n overoptimization experiment (and the settings of `bayesrm rl`)."""

    name: str = "sentiment"
    """Scenario name (report title, output folder)."""
    seed: int = 0
    """Seeds preference labels, proxy training and the estimator's tie-breaking (prompts: prompts.seed)."""
    policy: str = "smollm2"
    """Policy: 'smollm2' (embedded SmolLM2-135M-Instruct) or a local causal-LM directory."""
    gold: str = "vader"
    """Gold judge: vader | textblob:polarity | textblob:subjectivity | length:words | length:chars | rm:helpful (the embedded gold reward
    model) | rm:/path/to/saved/model; append @bf16 to an rm judge to score under bf16 autocast."""
    device: str = "auto"
    """Torch device of the policy, the gold reward model and the proxies: auto (cuda when one is visible, else
    cpu) | cpu | cuda | cuda:N | mps. The device itself is in no stage fingerprint (samples cached on one device
    are reused on another); the sampling dtype it resolves ``sampling.dtype: auto`` to is."""
    prompts: PromptConfig = field(default_factory=PromptConfig)
    """Where prompts come from."""
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    """How the policy samples. Its seed is separate from ``seed`` so that runs with several training seeds share one set of samples."""
    preferences: PreferenceConfig = field(default_factory=PreferenceConfig)
    """How gold-labelled pairs are made."""
    model: RewardModelConfig = field(default_factory=RewardModelConfig)
    """Reward-model settings shared by every proxy (backbone, lora_r, max_length, ...)."""
    training: RewardTrainingConfig = field(default_factory=RewardTrainingConfig)
    """Training settings of every proxy (learning_rate, num_train_epochs, per_device_train_batch_size, ...);
    seed and output_dir belong to the runner."""
    proxies: list[ProxyConfig] = field(default_factory=lambda: [ProxyConfig()])
    """The proxies, each trained (or fitted) on the same pairs."""
    bon: BoNConfig = field(default_factory=BoNConfig)
    """Best-of-n settings."""
    two_property: TwoPropertyConfig | None = None
    """Set to run the two-property (logical AND) variant as well."""
    rl: RLConfig | None = None
    """Settings of `bayesrm rl` (bayesrm.alignment.rl.RLConfig); paths in it are relative to the scenario file."""

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def prepare_mapping(cls, data: dict[str, Any], where: str) -> dict[str, Any]:
        training = data.get("training")
        if isinstance(training, dict):
            for key, reason in RUNNER_OWNED_TRAINING.items():
                if key in training:
                    raise ConfigError(f"{where}: training.{key}: not settable here; {reason}")
        if "proxies" in data and not data["proxies"]:
            raise ConfigError(f"{where}: proxies: expected a non-empty list")
        return data

    def bon_ns(self) -> list[int]:
        if self.bon.ns:
            return sorted(set(self.bon.ns))
        ns, n = [], 1
        while n <= self.bon.n_samples:
            ns.append(n)
            n *= 2
        return ns

    def with_seed(self, seed: int) -> "ScenarioConfig":
        """The same scenario with another seed (labels, training, tie-breaking)."""
        return dataclasses.replace(self, seed=seed)

    def validate(self) -> None:
        """Cross-field checks (each field's own type and range are checked when it is built)."""
        check_device(self.device)
        names = [p.name for p in self.proxies]
        if not names:
            raise ValueError("proxies: expected a non-empty list")
        if len(set(names)) != len(names):
            raise ValueError(f"proxies: names must be unique, got {names}")
        for i, proxy in enumerate(self.proxies):
            if proxy.method == "laplace":
                base = next((p for p in self.proxies if p.name == proxy.base), None)
                if base is None or base.method != "map":
                    raise ValueError(f"proxies[{i}] ({proxy.name!r}): a laplace proxy needs base: <name of a map proxy>")
            if proxy.ensemble.seed != 0:
                raise ValueError(f"proxies[{i}].ensemble.seed: not settable here; set the scenario's top-level seed")
        if self.bon.n_samples < 2 or self.bon.prompts < 1:
            raise ValueError("bon: needs n_samples >= 2 and prompts >= 1")
        if min(self.bon_ns()) < 1 or max(self.bon_ns()) > self.bon.n_samples:
            raise ValueError(f"bon.ns: values must be in 1..n_samples={self.bon.n_samples}")
        if self.bon.selection_prompts < 0:
            raise ValueError("bon.selection_prompts: must be >= 0")
        if self.preferences.samples_per_prompt < 2:
            raise ValueError("preferences.samples_per_prompt: must be >= 2")
        if self.preferences.prompts < 1:
            raise ValueError("preferences.prompts: must be >= 1")
        if not 0 <= self.preferences.validation_fraction < 1:
            raise ValueError("preferences.validation_fraction: must be in [0, 1)")
        from bayesrm.rewards import parse_reward

        for i, spec in enumerate(self.bon.rewards):
            try:
                parse_reward(spec)
            except (ValueError, KeyError, TypeError) as err:
                raise ValueError(f"bon.rewards[{i}]: {err}") from err


def scenario_path(name_or_path: str) -> Path:
    """A built-in scenario name ('helpful', 'sentiment') or a YAML path."""
    if name_or_path in BUILTIN:
        return Path(str(resources.files("bayesrm.scenarios") / f"{name_or_path}.yaml"))
    return Path(name_or_path)


def load_scenario(name_or_path: str, preset: str | None = None, overrides: dict[str, Any] | None = None) -> ScenarioConfig:
    """Read a scenario, merge a preset and then ``overrides`` (a nested mapping), and build and
    check every section; errors name the file, section and field."""
    from bayesrm.config import deep_merge

    path = scenario_path(name_or_path)
    data = load_config(path, preset, what="scenario")
    if overrides:
        data = deep_merge(data, overrides)
    config = from_mapping(ScenarioConfig, data, str(path))
    if config.rl is not None:
        config.rl = config.rl.with_paths_relative_to(path.parent)
    return config
