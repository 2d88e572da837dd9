"""A reward-hacking monitor: per-step signals from what a bayesrm RL run logs, and an alarm rule.

Signals, each compared with its own *reference level*, the mean over the first ``warmup`` steps
(step 1 samples the reference policy itself: the LoRA update starts at zero), after a trailing
mean over ``window`` steps:

| signal | definition | on when |
|---|---|---|
| ``sigma`` | smoothed proxy sigma / its reference level | ratio >= ``sigma_ratio`` (1.25) |
| ``disagreement`` | smoothed member disagreement (1 - mean pairwise correlation of the ensemble's members over the batch) / its reference level | ratio >= ``disagreement_ratio`` (1.25) |
| ``divergence`` | gold fell below its best smoothed value by ``gold_drop`` (2) noise SDs of the smoothed gold, while the smoothed proxy is at least where it was at that best | gold is logged and both hold |
| ``kl`` | KL growth over the last ``window`` steps / growth over the ``window`` before | ratio >= ``kl_accel`` (2), KL rising |
| ``length`` | smoothed response length / its reference level | ratio >= ``length_ratio`` (1.5) or <= 1 / ``length_ratio`` |

The gold noise SD is estimated from step-to-step differences of the raw gold so far (sd / sqrt 2),
so a slow trend does not inflate it. **Alarm rule**: the score ``2 * divergence + sigma +
disagreement + kl + length`` (each 0 or 1) is at least 2 for ``patience`` (3) consecutive steps:
proxy-gold divergence alone, or any two of the label-free signals. A signal whose inputs are not
logged (no gold, a point proxy without sigma or members) is off. Thresholds are set a priori, not
fitted on the runs evaluated in docs/rl.md.

``HackingMonitor.update(record)`` takes one log record (``bayesrm rl``'s keys by default) and returns
the ``monitor_*`` fields; :class:`HackingMonitorCallback` runs it in a ``transformers`` / TRL trainer.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import torch

from bayesrm.alignment.rl.tracking import is_finite_number
from bayesrm.types import RewardPrediction

RL_KEYS = {"sigma": "uncertainty", "disagreement": "disagreement", "proxy": "proxy", "gold": "gold",
           "kl": "kl_k3", "length": "response_length"}
"""Where each monitored quantity is in a `bayesrm rl` log record."""
TRL_PREFIX = "bayesrm/"
"""The one naming scheme of bayesrm's metrics in a TRL log: ``bayesrm/`` + the key `bayesrm rl` logs the same batch
mean under (``bayesrm/proxy``, ``bayesrm/uncertainty``, ``bayesrm/disagreement``, ``bayesrm/gold``), and ``bayesrm/u_bar``
(``up``'s running mean sigma). Both TRL reward functions (alignment.rl.trl_reward_func, integrations.trl.reward_func) log
them through TRL's ``log_metric``; TRL logs the reward itself as ``rewards/<function name>/mean``. Several bayesrm
reward functions in one trainer share these names (TRL averages what is logged under one name)."""
TRL_KEYS = {**{signal: TRL_PREFIX + RL_KEYS[signal] for signal in ("sigma", "disagreement", "proxy", "gold")},
            "kl": "kl", "length": "completions/mean_length"}
"""Where they are in a TRL GRPO / RLOO log (TRL_PREFIX names from bayesrm's reward function; kl and length TRL's own)."""
SIGNALS = ("sigma", "disagreement", "divergence", "kl", "length")


@dataclass
class MonitorConfig:
    """Thresholds of the reward-hacking monitor (see the module docstring for the rule)."""

    warmup: int = 5
    """Steps whose mean is each signal's reference level; no signal is on before step warmup + 1."""
    window: int = 5
    """Trailing-mean window (steps) applied before any comparison."""
    sigma_ratio: float = 1.25
    """sigma is on when smoothed sigma >= this times its reference level."""
    disagreement_ratio: float = 1.25
    """disagreement is on when smoothed disagreement >= this times its reference level."""
    gold_drop: float = 2.0
    """divergence: gold this many noise SDs (of the smoothed gold) below its best while the proxy is not lower."""
    kl_accel: float = 2.0
    """kl is on when KL grew this many times faster over the last window than over the window before."""
    length_ratio: float = 1.5
    """length is on when smoothed length is this many times its reference level, or that many times smaller."""
    patience: int = 3
    """Consecutive steps the rule must hold before the alarm fires."""
    min_score: int = 2
    """Score needed: divergence counts 2, every other signal 1."""

    def __post_init__(self) -> None:
        for name in ("warmup", "window", "patience", "min_score"):
            if getattr(self, name) < 1:
                raise ValueError(f"MonitorConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("sigma_ratio", "disagreement_ratio", "kl_accel", "length_ratio"):
            if not getattr(self, name) > 1:
                raise ValueError(f"MonitorConfig.{name} must be > 1, got {getattr(self, name)}")


def disagreement(pred: RewardPrediction) -> float | None:
    """1 - mean pairwise Pearson correlation of the members' rewards over the batch (None without >= 2 members)."""
    members = pred.members
    if members is None or members.shape[0] < 2 or members.shape[1] < 3:
        return None
    m = members.double() - members.double().mean(1, keepdim=True)  # [K, B]
    norm = m.norm(dim=1, keepdim=True)
    if not torch.all(norm > 0):
        return None
    corr = (m / norm) @ (m / norm).T  # [K, K]
    k = corr.shape[0]
    return float(1.0 - (corr.sum() - k) / (k * (k - 1)))


@dataclass
class HackingMonitor:
    """Feeds on one log record a step; see the module docstring."""

    config: MonitorConfig = field(default_factory=MonitorConfig)
    keys: Mapping[str, str] = field(default_factory=lambda: dict(RL_KEYS))
    history: dict[str, list[float | None]] = field(default_factory=dict)
    streak: int = 0
    fired_at: int | None = None
    steps: int = 0
    # running gold statistics (updated once a step, so a long TRL run costs O(1) a step)
    _best: float | None = field(default=None, repr=False)
    _best_at: int = field(default=0, repr=False)
    _proxy_at_best: float | None = field(default=None, repr=False)
    _last_gold: float | None = field(default=None, repr=False)
    _golds: int = field(default=0, repr=False)
    _diff_mean: float = field(default=0.0, repr=False)
    _diff_m2: float = field(default=0.0, repr=False)

    def _series(self, name: str) -> list[float | None]:
        return self.history.setdefault(name, [])

    def _smooth(self, name: str, end: int | None = None) -> float | None:
        xs = [x for x in self._series(name)[:end][-self.config.window :] if x is not None]
        return sum(xs) / len(xs) if xs else None

    def _reference(self, name: str) -> float | None:
        xs = [x for x in self._series(name)[: self.config.warmup] if x is not None]
        return sum(xs) / len(xs) if xs else None

    def _ratio(self, name: str) -> float | None:
        ref, now = self._reference(name), self._smooth(name)
        if ref is None or now is None or not ref > 1e-12:
            return None
        return now / ref

    def update(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Add one step's record; returns its monitor_* fields (signal values, which are on, the alarm)."""
        cfg = self.config
        self.steps += 1
        for name, key in self.keys.items():
            value = record.get(key)
            self._series(name).append(float(value) if is_finite_number(value) else None)
        self._track_gold()
        values: dict[str, float | None] = {
            "sigma_ratio": self._ratio("sigma"),
            "disagreement_ratio": self._ratio("disagreement"),
            "length_ratio": self._ratio("length"),
            "gold_drop_sd": self._gold_drop(),
            "kl_accel": self._kl_accel(),
        }
        ready = self.steps > cfg.warmup
        on = {
            "sigma": ready and _ge(values["sigma_ratio"], cfg.sigma_ratio),
            "disagreement": ready and _ge(values["disagreement_ratio"], cfg.disagreement_ratio),
            "divergence": ready and self._diverging(values["gold_drop_sd"]),
            "kl": ready and _ge(values["kl_accel"], cfg.kl_accel),
            "length": ready and (_ge(values["length_ratio"], cfg.length_ratio) or _ge(_inv(values["length_ratio"]), cfg.length_ratio)),
        }
        score = 2 * on["divergence"] + sum(on[s] for s in SIGNALS if s != "divergence")
        self.streak = self.streak + 1 if score >= cfg.min_score else 0
        alarm = self.streak >= cfg.patience
        if alarm and self.fired_at is None:
            self.fired_at = int(record.get("step", self.steps))
        out: dict[str, Any] = {f"monitor_{k}": v for k, v in values.items()}
        out.update(monitor_signals=",".join(s for s in SIGNALS if on[s]), monitor_score=int(score),
                   monitor_alarm=bool(alarm), monitor_fired_at=self.fired_at)
        return out

    def _track_gold(self) -> None:
        """Fold this step's gold into the step-to-step difference statistics and the best smoothed gold."""
        gold = self._series("gold")[-1]
        if gold is not None:
            if self._last_gold is not None:  # Welford update of the first differences
                diff, n = gold - self._last_gold, self._golds
                delta = diff - self._diff_mean
                self._diff_mean += delta / n
                self._diff_m2 += delta * (diff - self._diff_mean)
            self._last_gold, self._golds = gold, self._golds + 1
        smoothed = self._smooth("gold")
        if smoothed is not None and (self._best is None or smoothed > self._best):
            self._best, self._best_at, self._proxy_at_best = smoothed, self.steps - 1, self._smooth("proxy")

    def _gold_drop(self) -> float | None:
        """(best smoothed gold so far - smoothed gold now) / noise SD of the smoothed gold."""
        if self._golds < 3 or self._best is None:
            return None
        sd = math.sqrt(self._diff_m2 / (self._golds - 1)) / math.sqrt(2) / math.sqrt(min(self.config.window, self._golds))
        drop = self._best - (self._smooth("gold") or self._best)
        return drop / sd if sd > 0 else (math.inf if drop > 0 else 0.0)

    def _diverging(self, drop_sd: float | None) -> bool:
        if drop_sd is None or drop_sd < self.config.gold_drop:
            return False
        proxy_now = self._smooth("proxy")
        return self._proxy_at_best is not None and proxy_now is not None and proxy_now >= self._proxy_at_best

    def _kl_accel(self) -> float | None:
        """Growth of the smoothed KL over the last window / over the window before (None unless KL is rising)."""
        w, n = self.config.window, len(self._series("kl"))
        if n < 2 * w + 1:
            return None
        now, mid, old = self._smooth("kl"), self._smooth("kl", n - w), self._smooth("kl", n - 2 * w)
        if now is None or mid is None or old is None or not now - mid > 0:
            return None
        return math.inf if mid - old <= 0 else (now - mid) / (mid - old)

    def config_dict(self) -> dict[str, Any]:
        return asdict(self.config)


def _ge(value: float | None, threshold: float) -> bool:
    return value is not None and value >= threshold


def _inv(value: float | None) -> float | None:
    return None if value is None or value <= 0 else 1.0 / value


def run_monitor(records: Sequence[Mapping[str, Any]], config: MonitorConfig | None = None,
                keys: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    """The monitor's output for every record of a log, in order."""
    monitor = HackingMonitor(config or MonitorConfig(), dict(keys or RL_KEYS))
    return [monitor.update(r) for r in records]


def _callback_base() -> type:
    from transformers import TrainerCallback

    return TrainerCallback


class HackingMonitorCallback(_callback_base()):  # type: ignore[misc]
    """The monitor as a ``transformers.TrainerCallback`` (TRL GRPOTrainer / RLOOTrainer, any Trainer).

    Reads each training log (TRL's ``kl`` and ``completions/mean_length``, and the ``bayesrm/*``
    metrics that :func:`~bayesrm.alignment.rl.trl_reward_func` reports through TRL's ``log_metric``),
    adds ``monitor/*`` fields to that log (the ``logs`` dict and the entry in ``state.log_history``),
    and with ``early_stop`` stops training when the alarm fires.
    """

    def __init__(self, config: MonitorConfig | None = None, early_stop: bool = False,
                 keys: Mapping[str, str] | None = None):
        self.monitor = HackingMonitor(config or MonitorConfig(), dict(keys or TRL_KEYS))
        self.early_stop = early_stop

    def on_log(self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        if not logs or not any(k in logs for k in self.monitor.keys.values()):
            return control  # an eval or summary log
        out = self.monitor.update({**logs, "step": state.global_step})
        fields = {f"monitor/{k.removeprefix('monitor_')}": v for k, v in out.items()}
        logs.update(fields)
        if state.log_history and state.log_history[-1].get("step") == state.global_step:
            state.log_history[-1].update(fields)
        if self.early_stop and out["monitor_alarm"]:
            control.should_training_stop = True
        return control


def evaluate_monitor(records: Sequence[Mapping[str, Any]], config: MonitorConfig | None = None) -> dict[str, Any]:
    """Score the monitor on one finished log with a gold reward, in hindsight.

    The run *over-optimised* if, over the whole run, its smoothed gold ended ``gold_drop`` noise SDs
    below its best while the smoothed proxy ended at least where it was at that best (the divergence
    rule applied to the complete log). ``lead_steps`` = gold-peak step - alarm step (> 0: the alarm
    came first). Reported twice: with the gold signal, and label-free (gold hidden from the monitor).
    """
    config = config or MonitorConfig()
    hindsight = HackingMonitor(MonitorConfig(**{**asdict(config), "warmup": 1}))
    for r in records:
        hindsight.update(r)
    drop = hindsight._gold_drop()
    over = bool(drop is not None and hindsight._diverging(drop))
    peak = int(records[hindsight._best_at]["step"]) if drop is not None else None
    out: dict[str, Any] = {"steps": len(records), "over_optimised": over, "gold_peak_step": peak,
                           "final_gold_drop_sd": drop}
    for name, recs in (("with_gold", records), ("label_free", [{k: v for k, v in r.items() if k != "gold"} for r in records])):
        fired = run_monitor(recs, config)[-1]["monitor_fired_at"]
        out[f"alarm_{name}"] = fired
        out[f"lead_{name}"] = None if fired is None or peak is None else peak - fired
    return out
