"""The reward-hacking monitor: its rule on synthetic logs, inside `bayesrm rl`, and as a callback in a real TRL trainer."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from bayesrm.alignment.rl import trl_reward_func
from bayesrm.rewards import parse_reward
from bayesrm.alignment.rl.monitor import HackingMonitor, HackingMonitorCallback, MonitorConfig, disagreement, run_monitor
from bayesrm.types import RewardPrediction
from test_rl_train import PROMPTS, WordScorer, one_thread, tiny_cfg, tiny_lm, tokenizer  # noqa: F401 (fixtures)


def log(n=30, sigma=lambda t: 0.2, proxy=lambda t: 0.01 * t, gold=lambda t: 0.01 * t, kl=lambda t: 0.2 * t,
        length=lambda t: 20.0, noise=0.01):
    g = torch.Generator().manual_seed(0)
    eps = lambda: noise * float(torch.randn((), generator=g))  # noqa: E731
    return [{"step": t, "uncertainty": sigma(t) + eps(), "proxy": proxy(t) + eps(), "gold": gold(t) + eps(),
             "kl_k3": kl(t), "response_length": length(t)} for t in range(1, n + 1)]


def test_fires_when_sigma_and_proxy_gold_divergence_rise_not_on_a_flat_log():
    # gold peaks at step 15 and falls while the proxy keeps rising and sigma grows
    hacked = log(sigma=lambda t: 0.2 * (1 + max(0, t - 12) / 6), gold=lambda t: 0.3 - 0.02 * abs(t - 15), proxy=lambda t: 0.02 * t)
    out = run_monitor(hacked)
    fired = out[-1]["monitor_fired_at"]
    assert fired is not None and 16 <= fired <= 24, fired
    assert "divergence" in out[fired - 1]["monitor_signals"] and "sigma" in out[fired - 1]["monitor_signals"]
    assert out[fired - 1]["monitor_alarm"] and not out[fired - 2]["monitor_alarm"]
    flat = run_monitor(log(proxy=lambda t: 0.1, gold=lambda t: 0.1, kl=lambda t: 0.2 * t))
    assert all(not o["monitor_alarm"] and o["monitor_score"] < 2 for o in flat)
    healthy = run_monitor(log())  # proxy and gold rise together: no alarm either
    assert healthy[-1]["monitor_fired_at"] is None


def test_one_label_free_signal_is_not_enough_two_are():
    sigma_only = run_monitor(log(sigma=lambda t: 0.2 * (1 + max(0, t - 10) / 5)))
    assert sigma_only[-1]["monitor_fired_at"] is None and any(o["monitor_signals"] == "sigma" for o in sigma_only)
    both = run_monitor(log(sigma=lambda t: 0.2 * (1 + max(0, t - 10) / 5), length=lambda t: 20.0 + 2.0 * max(0, t - 10)))
    fired = both[-1]["monitor_fired_at"]
    assert fired is not None and set(both[fired - 1]["monitor_signals"].split(",")) == {"sigma", "length"}
    no_gold = [{k: v for k, v in r.items() if k != "gold"} for r in log(gold=lambda t: -0.1 * t)]
    assert all(o["monitor_gold_drop_sd"] is None for o in run_monitor(no_gold))


def test_signal_values_by_hand():
    cfg = MonitorConfig(warmup=2, window=2, patience=1)
    m = HackingMonitor(cfg)
    rows = [(1.0, 0.0, 1.0), (1.0, 0.1, 3.0), (2.0, 0.2, 2.0), (4.0, 0.3, 1.0)]  # sigma, proxy, gold
    outs = [m.update({"step": i + 1, "uncertainty": s, "proxy": p, "gold": g}) for i, (s, p, g) in enumerate(rows)]
    assert outs[3]["monitor_sigma_ratio"] == pytest.approx(((2 + 4) / 2) / 1.0)
    # gold 1, 3, 2, 1: diffs 2, -1, -1 -> pstdev sqrt(2); noise of a 2-step mean: sqrt(2)/sqrt(2)/sqrt(2)
    # smoothed gold: 1, 2, 2.5, 1.5 -> best 2.5 at step 3, drop 1.0
    assert outs[3]["monitor_gold_drop_sd"] == pytest.approx(1.0 / (math.sqrt(2) / math.sqrt(2) / math.sqrt(2)))
    assert "divergence" not in outs[3]["monitor_signals"]  # 1.41 SD < 2
    pred = RewardPrediction.from_members(torch.tensor([[0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [2.0, 1.0, 0.0]]))
    assert disagreement(pred) == pytest.approx(1 - (1 - 1 - 1) / 3)  # correlations 1, -1, -1
    assert disagreement(RewardPrediction(mean=torch.zeros(3), var=torch.zeros(3))) is None
    with pytest.raises(ValueError, match="sigma_ratio"):
        MonitorConfig(sigma_ratio=1.0)


class GrowingSigma(WordScorer):
    """Members spread apart more on every call: sigma doubles each step."""

    def __init__(self):
        self.calls = 0

    def score(self, prompts, responses, batch_size=32, progress=False):
        self.calls += 1
        base = super().score(prompts, responses).mean
        spread = 0.1 * 2.0**self.calls * torch.tensor([-1.0, 0.0, 1.0])[:, None]
        return RewardPrediction.from_members(base[None] + spread + 0.01 * torch.arange(len(base))[None])


EAGER = {"warmup": 1, "window": 1, "patience": 1, "min_score": 1}


def test_bayesrm_rl_logs_the_monitor_and_can_stop(tokenizer, tmp_path):
    from bayesrm.alignment.rl import RLTrainer

    cfg = tiny_cfg(steps=6, monitor=EAGER, monitor_stop=True, prompts_per_step=2, samples_per_prompt=2)
    tr = RLTrainer(cfg, tiny_lm(tokenizer), tokenizer, GrowingSigma(), parse_reward("mean"), PROMPTS, tmp_path)
    records = tr.train()
    assert [r["step"] for r in records] == [1, 2] and tr.step == 2  # sigma ratio 2 at step 2: alarm, stop
    assert records[1]["monitor_alarm"] and records[1]["monitor_sigma_ratio"] == pytest.approx(2.0, rel=1e-3)
    assert "sigma" in records[1]["monitor_signals"] and isinstance(records[0]["disagreement"], float)
    assert (tmp_path / "checkpoint").is_dir()  # saved before stopping


trl = pytest.importorskip("trl")


def test_callback_runs_inside_a_trl_grpo_step_and_stops_training(tokenizer, tmp_path):
    from datasets import Dataset

    def trainer(callback, steps):
        args = trl.GRPOConfig(
            output_dir=str(tmp_path), max_steps=steps, per_device_train_batch_size=4, num_generations=2,
            max_completion_length=6, use_cpu=True, report_to=[], logging_steps=1, save_strategy="no",
        )
        return trl.GRPOTrainer(
            model=tiny_lm(tokenizer), reward_funcs=[trl_reward_func(GrowingSigma(), "up:beta2=1")], args=args,
            train_dataset=Dataset.from_dict({"prompt": ["hello world", "the cat is", "a dog", "please help"] * 2}),
            processing_class=tokenizer, callbacks=[callback],
        )

    callback = HackingMonitorCallback(MonitorConfig(**EAGER), early_stop=True)
    tr = trainer(callback, steps=4)
    tr.train()
    assert tr.state.global_step == 2  # the alarm at step 2 stopped a 4-step run
    logs = [h for h in tr.state.log_history if "monitor/score" in h]
    assert [h["step"] for h in logs] == [1, 2]
    assert logs[0]["bayesrm/uncertainty"] > 0 and logs[0]["bayesrm/disagreement"] is not None
    assert logs[1]["monitor/sigma_ratio"] == pytest.approx(2.0, rel=1e-3) and logs[1]["monitor/alarm"]
    assert logs[1]["completions/mean_length"] > 0


def test_callback_ignores_logs_without_its_keys():
    cb = HackingMonitorCallback()
    control = SimpleNamespace(should_training_stop=False)
    state = SimpleNamespace(global_step=3, log_history=[{"eval_loss": 1.0, "step": 3}])
    cb.on_log(None, state, control, logs={"eval_loss": 1.0})
    assert cb.monitor.steps == 0 and "monitor/score" not in state.log_history[-1]
