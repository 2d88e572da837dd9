"""Scenario configuration: one YAML file fixes prompts, policy, gold judge, preference data,
proxies and the best-of-n settings (DESIGN.md section 4). Copy ``sentiment.yaml`` and swap in
your own prompts, policy, gold and proxies.

A YAML may carry ``presets: {name: {overrides}}``; ``load_scenario(path, preset=name)`` deep-merges
the overrides into the base settings.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any


from bayesrm.fileio import read_yaml_mapping
from bayesrm.generation.sampler import SamplingConfig
from bayesrm.models.reward_model import RewardModelConfig

BUILTIN = ("helpful", "sentiment")
PROXY_METHODS = ("map", "heads", "lora-ensemble", "independent", "two-stage", "laplace")


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
    """Bradley-Terry labels from gold: P(a preferred to b) = sigmoid((gold_a - gold_b) / T)."""
    label_noise: float = 0.0
    """Probability of flipping each label after sampling it."""
    validation_fraction: float = 0.2
    """Held-out pairs (split by prompt) on which proxies report accuracy / ECE."""
    max_pairs: int | None = None
    """Train on a seeded random subset of this many pairs (a weaker, more exploitable proxy); None uses all."""


@dataclass
class ProxyConfig:
    """One proxy reward model trained on the gold-labelled pairs."""

    name: str = "map"
    """Label used in reports and file names."""
    method: str = "map"
    """map | heads | lora-ensemble | independent | two-stage | laplace (a K-FAC posterior on a trained map proxy)."""
    members: int = 5
    """Ensemble size K."""
    diversity: float = 0.0
    """lambda of the nuclear-norm diversity term (LoRA ensembles; UP-RLHF eq. 12)."""
    top_layers: int | None = None
    """LoRA ensembles: adapt only the top L blocks."""
    bootstrap: bool = False
    """Ensembles: Poisson(1) bootstrap resample per member."""
    base: str | None = None
    """laplace: name of the map proxy the posterior is fitted on."""
    prior_precision: float | None = None
    """laplace: fixed prior precision; None maximises the marginal likelihood."""


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


@dataclass
class ScenarioConfig:
    """A complete best-of-n overoptimization experiment."""

    name: str = "sentiment"
    """Scenario name (report title, output folder)."""
    seed: int = 0
    """Seeds preference labels, proxy training and the estimator's tie-breaking (prompts: prompts.seed)."""
    policy: str = "smollm2"
    """Policy: 'smollm2' (embedded SmolLM2-135M-Instruct) or a local causal-LM directory."""
    gold: str = "vader"
    """Gold judge: vader | textblob:polarity | textblob:subjectivity | rm:helpful (the embedded gold reward
    model) | rm:/path/to/saved/model."""
    prompts: PromptConfig = field(default_factory=PromptConfig)
    sampling: dict[str, Any] = field(default_factory=dict)
    """SamplingConfig fields (max_new_tokens, temperature, top_p, top_k, batch_size, seed). The sampling seed is
    separate from ``seed`` so that runs with several training seeds share one set of samples."""
    preferences: PreferenceConfig = field(default_factory=PreferenceConfig)
    model: dict[str, Any] = field(default_factory=dict)
    """RewardModelConfig fields shared by every proxy (backbone, lora_r, max_length, ...)."""
    training: dict[str, Any] = field(default_factory=dict)
    """RewardTrainingConfig fields (learning_rate, num_train_epochs, per_device_train_batch_size, ...)."""
    proxies: list[ProxyConfig] = field(default_factory=lambda: [ProxyConfig()])
    bon: BoNConfig = field(default_factory=BoNConfig)
    two_property: TwoPropertyConfig | None = None
    """Set to run the two-property (logical AND) variant as well."""
    rl: dict[str, Any] = field(default_factory=dict)
    """Settings of `bayesrm rl` (see bayesrm.alignment.rl.config)."""

    def sampling_config(self) -> SamplingConfig:
        return SamplingConfig(**self.sampling)

    def model_config(self) -> RewardModelConfig:
        return RewardModelConfig(**self.model)

    def bon_ns(self) -> list[int]:
        if self.bon.ns:
            return sorted(set(self.bon.ns))
        ns, n = [], 1
        while n <= self.bon.n_samples:
            ns.append(n)
            n *= 2
        return ns

    def validate(self) -> None:
        names = [p.name for p in self.proxies]
        if len(set(names)) != len(names):
            raise ValueError(f"scenario {self.name!r}: proxy names must be unique, got {names}")
        for proxy in self.proxies:
            if proxy.method not in PROXY_METHODS:
                raise ValueError(f"scenario {self.name!r}: proxy {proxy.name!r} has unknown method {proxy.method!r}; known: {PROXY_METHODS}")
            if proxy.method == "laplace":
                base = next((p for p in self.proxies if p.name == proxy.base), None)
                if base is None or base.method != "map":
                    raise ValueError(f"scenario {self.name!r}: laplace proxy {proxy.name!r} needs base: <name of a map proxy>")
        if self.bon.n_samples < 2 or self.bon.prompts < 1:
            raise ValueError(f"scenario {self.name!r}: bon needs n_samples >= 2 and prompts >= 1")
        if max(self.bon_ns()) > self.bon.n_samples:
            raise ValueError(f"scenario {self.name!r}: bon.ns goes above n_samples={self.bon.n_samples}")
        if self.bon.selection_prompts < 0:
            raise ValueError(f"scenario {self.name!r}: bon.selection_prompts must be >= 0")
        if self.preferences.samples_per_prompt < 2:
            raise ValueError(f"scenario {self.name!r}: preferences.samples_per_prompt must be >= 2")
        self.sampling_config()
        self.model_config()


def _build(cls: type, data: Any, where: str) -> Any:
    """A (nested) dataclass from a mapping, with errors that name the offending key."""
    if data is None:
        return cls()
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; known: {sorted(known)}")
    kwargs = {}
    for key, value in data.items():
        sub = {"prompts": PromptConfig, "preferences": PreferenceConfig, "bon": BoNConfig,
               "two_property": TwoPropertyConfig}.get(key) if cls is ScenarioConfig else None
        if sub is not None and value is not None:
            value = _build(sub, value, f"{where}.{key}")
        elif cls is ScenarioConfig and key == "proxies":
            if not isinstance(value, list) or not value:
                raise ValueError(f"{where}.proxies: expected a non-empty list")
            value = [_build(ProxyConfig, v, f"{where}.proxies[{i}]") for i, v in enumerate(value)]
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from err


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def scenario_path(name_or_path: str) -> Path:
    """A built-in scenario name ('sentiment') or a YAML path."""
    if name_or_path in BUILTIN:
        return Path(str(resources.files("bayesrm.scenarios") / f"{name_or_path}.yaml"))
    return Path(name_or_path)


def load_scenario(name_or_path: str, preset: str | None = None, overrides: dict[str, Any] | None = None) -> ScenarioConfig:
    """Read, merge (preset, then overrides) and validate a scenario."""
    path = scenario_path(name_or_path)
    data = read_yaml_mapping(path, "scenario")
    presets = data.pop("presets", {}) or {}
    if preset is not None:
        if preset not in presets:
            raise ValueError(f"{path}: no preset {preset!r}; presets: {sorted(presets)}")
        data = deep_merge(data, presets[preset])
    if overrides:
        data = deep_merge(data, overrides)
    config = _build(ScenarioConfig, data, str(path))
    config.validate()
    return config
