"""RLConfig: the ``rl:`` section of a scenario file (PPO or RLOO with a LoRA policy)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from bayesrm.config import from_mapping, load_config

ALGOS = ("ppo", "rloo")
KL_MODES = ("penalty", "token_loss", "seq_loss", "none")
PRESETS: dict[str, dict[str, Any]] = {
    "rlhf": {"reward": "mean", "kl_mode": "penalty"},
    "up-rlhf": {"reward": "up:beta2=1.0", "kl_mode": "seq_loss"},
}
"""Named pairings of reward and KL mechanism for :meth:`RLConfig.preset`: 'rlhf' is classic RLHF (the proxy
mean with a per-token KL penalty); 'up-rlhf' is UP-RLHF as the paper writes it (eq. 14 reward, eq. 15 KL loss)."""


@dataclass
class RLConfig:
    """Settings of one RL fine-tuning run. Defaults are the CPU `small` sizes for SmolLM2-135M."""

    # ---- what is optimised against what ----
    algo: str = "ppo"
    """ppo (clipped PPO with a value head and GAE) | rloo (leave-one-out baseline, no value head)."""
    policy: str = "smollm2"
    """Policy: the embedded alias 'smollm2' (SmolLM2-135M-Instruct) or a local causal-LM directory."""
    proxy: str | list[str] | None = None
    """Directory of a saved reward model / ensemble / posterior (loaded with bayesrm.load_scorer); a list of
    them scores the terms of an AND sum reward ('A + B'), one proxy per term."""
    gold: str | None = None
    """Gold judge spec for logging only, scored on the same responses: 'vader', 'textblob', 'rm:<dir>'
    (bayesrm.evaluation.gold.make_judge); None logs no gold reward."""
    prompts: str | None = None
    """Prompt file (.txt one prompt a line, .jsonl / .json with a prompt field; relative to the config file) or chitchat:N (N real chat messages)."""
    reward: str = "mean"
    """Reward of the proxy's prediction, a bayesrm.rewards spec: mean | std | var | min | up, with optional
    stages ('std:k=2', 'zscore|std:k=1', 'std:k=1|log_sigmoid') and AND sums ('log_sigmoid + std:k=1|log_sigmoid',
    one term per proxy when proxy is a list). The default is the unpenalised mean: pick an uncertainty penalty
    explicitly, or start from RLConfig.preset('up-rlhf')."""
    reward_params: dict[str, Any] = field(default_factory=dict)
    """Extra parameters of the reward's last stage, e.g. {k: 2.0} with reward 'std', {beta2: 0.5} with 'up'."""

    # ---- loop sizes ----
    steps: int = 50
    """Number of RL steps (one rollout batch + its updates each)."""
    prompts_per_step: int = 16
    """Prompts per rollout batch."""
    samples_per_prompt: int = 4
    """Responses sampled per prompt (RLOO needs >= 2); the rollout batch is prompts_per_step * samples_per_prompt."""
    max_prompt_tokens: int = 128
    """Prompt token budget; longer prompts are trimmed from the left."""
    max_new_tokens: int = 40
    """Response length limit (tokens)."""
    temperature: float = 1.0
    """Sampling temperature; the log-probs used by the losses are of the same tempered distribution."""
    top_k: int = 0
    """Top-k sampling (0 = off). Non-default top-k/top-p makes the sampler differ from pi: keep off for exact PPO."""
    top_p: float = 1.0
    """Nucleus sampling threshold (1.0 = off)."""
    reference_samples: int = 4
    """Reference-policy samples drawn once per prompt for per-prompt levels r_ref(x) (rewards with a
    log_sigmoid stage; other rewards draw none). Levels are q-quantiles over these samples."""
    chat_template: bool = True
    """Render prompts with the policy tokenizer's chat template (when it has one)."""

    # ---- LoRA policy ----
    lora_r: int = 8
    """LoRA rank of the policy adapter."""
    lora_alpha: float = 16.0
    """LoRA scaling numerator: the update is (alpha / r) B A."""
    lora_dropout: float = 0.0
    """Dropout on the LoRA input (0 keeps rollout and update log-probs identical)."""
    target_modules: list[str] | str | None = None
    """Modules to adapt (names, or 'all-linear'); None uses peft's default (q_proj, v_proj for Llama)."""

    # ---- optimisation ----
    lr: float = 1e-4
    """AdamW learning rate (LoRA and value head)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    update_epochs: int = 1
    """Passes over each rollout batch (PPO epochs)."""
    minibatch_size: int = 16
    """Sequences per gradient step."""
    max_grad_norm: float = 1.0
    """Gradient clipping by global norm (0 = off)."""
    clip_range: float = 0.2
    """PPO ratio clip epsilon."""
    whiten_advantages: bool = True
    """Normalise advantages over the batch (masked mean 0, std 1)."""

    # ---- PPO value head ----
    vf_coef: float = 0.1
    """Weight of the value loss (PPO only)."""
    clip_range_value: float = 0.2
    """Value clip epsilon (PPO only)."""
    gamma: float = 1.0
    """Discount over response tokens (PPO only)."""
    lam: float = 0.95
    """GAE lambda (PPO only)."""
    ent_coef: float = 0.0
    """Entropy bonus weight."""

    # ---- KL to the reference (the base model with the adapter disabled) ----
    kl_mode: str = "penalty"
    """penalty: -kl_coef (log pi - log pi_ref) on every token's reward (classic RLHF);
    seq_loss: kl_coef * E_y[(sum_t log pi - log pi_ref)^2], a separate loss on the sequence log-ratio
    (UP-RLHF eq. 15 as written); token_loss: kl_coef * E_t[(log pi - log pi_ref)^2], the same square
    averaged over response tokens (a per-token variant, much smaller for long responses); none."""
    kl_coef: float = 0.05
    """beta of the per-token penalty, or beta1 of the KL loss (seq_loss squares a sum over tokens, so
    the same beta1 weighs far more than with token_loss)."""

    # ---- bookkeeping ----
    seed: int = 0
    """Seed of the LoRA/value-head init, the prompt order and the sampler."""
    device: str = "cpu"
    """Torch device of the policy (scorers keep their own device)."""
    score_batch_size: int = 32
    """Batch size when scoring responses with the proxy and gold."""
    save_every: int = 10
    """Checkpoint every this many steps (and at the end); 0 saves only at the end."""
    log_samples: int = 4
    """Responses per step (the first sample of as many prompts) written to OUT/samples.jsonl with their rewards (prompt, response, reward,
    proxy, sigma, gold), to read what the policy learned; 0 writes none."""
    monitor: dict[str, Any] = field(default_factory=dict)
    """Thresholds of the reward-hacking monitor that differ from MonitorConfig's defaults (alignment/rl/monitor.py),
    e.g. {sigma_ratio: 1.5, patience: 5}. Its signals and alarm are logged every step (monitor_* keys)."""
    monitor_stop: bool = False
    """Stop the run (after a checkpoint) at the step the monitor's alarm fires."""
    plot: bool = True
    """Write PNG plots (gold and proxy against KL and against step) at each checkpoint."""

    def __post_init__(self) -> None:
        _check(self.algo in ALGOS, "algo", f"must be one of {ALGOS}, got {self.algo!r}")
        _check(self.kl_mode != "loss", "kl_mode", "'loss' was split in two: 'seq_loss' (UP-RLHF eq. 15 as written, "
               "on the sequence log-ratio) or 'token_loss' (the per-token mean that 'loss' used to be)")
        _check(self.kl_mode in KL_MODES, "kl_mode", f"must be one of {KL_MODES}, got {self.kl_mode!r}")
        for name in ("steps", "prompts_per_step", "samples_per_prompt", "max_new_tokens", "minibatch_size", "update_epochs",
                     "reference_samples"):
            _check(getattr(self, name) >= 1, name, f"must be >= 1, got {getattr(self, name)}")
        _check(self.algo != "rloo" or self.samples_per_prompt >= 2, "samples_per_prompt", "RLOO needs at least 2")
        _check(self.temperature > 0, "temperature", f"must be > 0, got {self.temperature}")
        _check(0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p}")
        _check(self.lora_r >= 1, "lora_r", f"must be >= 1, got {self.lora_r}")
        _check(isinstance(self.reward_params, dict), "reward_params", "must be a mapping")
        _check(isinstance(self.monitor, dict), "monitor", "must be a mapping of MonitorConfig fields")

    @property
    def batch_size(self) -> int:
        """Sequences per rollout batch."""
        return self.prompts_per_step * self.samples_per_prompt

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "RLConfig":
        """An RLConfig with a named reward / KL pairing (PRESETS) and any other fields overridden."""
        if name not in PRESETS:
            raise ValueError(f"unknown RL preset {name!r}; presets: {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "rl") -> "RLConfig":
        """Build from a mapping; unknown or mistyped fields raise ValueError naming ``source`` and the field."""
        return from_mapping(cls, data, source)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None, preset: str | None = None) -> "RLConfig":
        """Read the ``rl:`` section of a scenario YAML file after merging a preset; paths in it are
        made relative to the file. (Built-in scenario names: ``bayesrm.scenarios.load_scenario``.)"""
        path = Path(path)
        doc = load_config(path, preset, what="scenario")
        if "rl" not in doc:
            raise ValueError(f"{path}: no 'rl:' section")
        data = dict(doc["rl"] or {})
        data.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return cls.from_dict(data, source=f"{path}: rl").with_paths_relative_to(path.parent)

    def with_paths_relative_to(self, base: Path) -> "RLConfig":
        """proxy / prompts / policy written as paths next to the config file, made absolute
        (a Hub id, 'chitchat:N' or an alias such as 'smollm2' stays as is)."""
        changes = {}
        def near(value: Any) -> Any:
            if isinstance(value, str) and not Path(value).is_absolute() and (
                value.startswith(("./", "../")) or (base / value).exists()
            ):
                return str((base / value).resolve())
            return value

        for key in ("proxy", "prompts", "policy"):
            value = getattr(self, key)
            new = [near(v) for v in value] if isinstance(value, list) else near(value)
            if new != value:
                changes[key] = new
        return replace(self, **changes) if changes else self


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"{name}: {message}")
