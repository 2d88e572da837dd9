"""The RL loop shared by PPO and RLOO: rollout -> score -> advantages -> update, with logging,
checkpoints and exact resume.

    trainer = RLTrainer(cfg, base_model, tokenizer, proxy, reward, prompts, out_dir, gold=gold)
    trainer.train()        # or trainer.resume(); trainer.train()
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import torch
from peft import LoraConfig, get_peft_model

from bayesrm.alignment.rl import losses as L
from bayesrm.alignment.rl.config import RLConfig
from bayesrm.alignment.rl.monitor import HackingMonitor, MonitorConfig, disagreement
from bayesrm.alignment.rl.ppo import policy_update, ppo_advantages
from bayesrm.alignment.rl.reference import ReferenceLevels, reference_sampler, sampled_levels
from bayesrm.alignment.rl.reward_fn import Reward, load_reward_state, reward_state, score_batch
from bayesrm.alignment.rl.rloo import rloo_advantages_for
from bayesrm.alignment.rl.rollout import PolicyWithValue, sample_rollout
from bayesrm.alignment.rl.state import load_state, save_state
from bayesrm.alignment.rl.tracking import JsonlLog, plot_run
from bayesrm.models.checkpoint import read_meta
from bayesrm.types import Prompt, RewardScorer

RESUMABLE_CHANGES = {"steps", "save_every"}
"""RLConfig fields a resumed run may change (how long it runs, how often it saves); any other change is refused."""

CHECKPOINT_DIR = "checkpoint"
LOG_NAME = "log.jsonl"
SAMPLES_NAME = "samples.jsonl"
REFERENCE_NAME = "reference.jsonl"


def build_policy(base_model: torch.nn.Module, cfg: RLConfig) -> PolicyWithValue:
    """Freeze the base causal LM, add a fresh LoRA adapter (and a value head for PPO), seeded by cfg.seed."""
    torch.manual_seed(cfg.seed)
    for p in base_model.parameters():
        p.requires_grad_(False)
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=cfg.target_modules,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return PolicyWithValue(get_peft_model(base_model, lora), value_head=cfg.algo == "ppo")


def prompt_batch(prompts: Sequence[Prompt], step: int, n: int, seed: int) -> list[Prompt]:
    """Prompts of step ``step``: positions [step n, step n + n) of a stream of seeded epoch permutations
    (a function of the step alone, so a resumed run draws the same prompts)."""
    out = []
    for pos in range(step * n, step * n + n):
        epoch, i = divmod(pos, len(prompts))
        perm = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        out.append(prompts[int(perm[i])])
    return out


class RLTrainer:
    """PPO / RLOO against a conservative reward of a proxy scorer, logging the gold judge alongside."""

    def __init__(
        self,
        cfg: RLConfig,
        base_model: torch.nn.Module,
        tokenizer: Any,
        proxy: RewardScorer | Sequence[RewardScorer],
        reward: Reward,
        prompts: Sequence[Prompt],
        out_dir: str | Path,
        gold: RewardScorer | None = None,
    ):
        if not prompts:
            raise ValueError("no prompts to train on")
        self.cfg, self.tokenizer, self.proxy, self.reward, self.gold = cfg, tokenizer, proxy, reward, gold
        self.prompts = list(prompts)
        self.out_dir = Path(out_dir)
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.policy = build_policy(base_model, cfg).to(cfg.device)
        self.optimizer = torch.optim.AdamW(
            [p for p in self.policy.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay
        )
        self.log = JsonlLog(self.out_dir / LOG_NAME)
        self.samples_log = JsonlLog(self.out_dir / SAMPLES_NAME)
        self.reference = None  # per-prompt levels of log_sigmoid rewards, from reference-policy samples
        if sampled_levels(reward):
            if not cfg.chat_template and getattr(tokenizer, "chat_template", None):
                raise ValueError("chat_template: false with a log_sigmoid reward: reference samples are drawn with the tokenizer's chat template")
            sampler = reference_sampler(
                self.policy.model, tokenizer, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                top_k=cfg.top_k, top_p=cfg.top_p, seed=cfg.seed, disable_adapter=True,
            )
            self.reference = ReferenceLevels(
                sampler, proxy, cfg.reference_samples, cfg.score_batch_size, log_path=self.out_dir / REFERENCE_NAME
            )
        try:
            self.monitor = HackingMonitor(MonitorConfig(**cfg.monitor))
        except TypeError as err:
            raise ValueError(f"monitor: {err}") from err
        self.step = 0
        torch.manual_seed(cfg.seed + 1)  # sampler stream, independent of the init stream

    # ---- one step, top to bottom ---------------------------------------------------------
    def train_step(self) -> dict[str, Any]:
        cfg = self.cfg
        t0 = time.perf_counter()
        prompts = prompt_batch(self.prompts, self.step, cfg.prompts_per_step, cfg.seed)
        rollout = sample_rollout(
            self.policy, self.tokenizer, prompts,
            samples_per_prompt=cfg.samples_per_prompt, max_prompt_tokens=cfg.max_prompt_tokens,
            max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
            chat_template=cfg.chat_template, forward_batch_size=cfg.minibatch_size,
        )
        t1 = time.perf_counter()
        new_prompts = self.reference.ensure(self.reward, prompts, self.step + 1) if self.reference is not None else 0
        t_ref = time.perf_counter() - t1
        t1 = time.perf_counter()
        scored = score_batch(self.proxy, self.reward, rollout.prompts, rollout.responses, self.gold, cfg.score_batch_size)
        t2 = time.perf_counter()
        scores = scored.reward.to(rollout.logprobs.device)  # [B]
        if cfg.algo == "ppo":
            advantages, returns = ppo_advantages(rollout, scores, cfg)
        else:
            advantages, returns = rloo_advantages_for(rollout, scores, cfg), None
        update_stats = policy_update(self.policy, self.optimizer, rollout, advantages, returns, cfg)
        t3 = time.perf_counter()
        self.step += 1

        mask = rollout.response_mask
        record: dict[str, Any] = {
            "step": self.step,
            "reward": scored.reward.mean().item(),
            "proxy": scored.proxy.mean.mean().item(),
            "uncertainty": scored.proxy.std.mean().item(),
            "disagreement": disagreement(scored.proxy),
            "gold": scored.gold.mean().item() if scored.gold is not None else None,
            "kl_k1": L.kl_k1(rollout.logprobs, rollout.ref_logprobs, mask).mean().item(),
            "kl_k3": L.kl_k3(rollout.logprobs, rollout.ref_logprobs, mask).mean().item(),
            "entropy": L.masked_mean(rollout.entropy, mask).item(),
            "response_length": rollout.lengths.float().mean().item(),
            "time_rollout_s": t1 - t0 - t_ref,
            "time_score_s": t2 - t1,
            "time_update_s": t3 - t2,
            **update_stats,
        }
        if self.reference is not None:
            record.update(reference_new_prompts=new_prompts, time_reference_s=t_ref)
        for j, pred in enumerate(scored.proxies[1:], 1):  # the other proxies of an AND sum
            record[f"proxy_{j}"], record[f"uncertainty_{j}"] = pred.mean.mean().item(), pred.std.mean().item()
        record.update(self.monitor.update(record))
        self.log.append(record)
        for i in list(range(0, len(rollout.responses), cfg.samples_per_prompt))[: cfg.log_samples]:  # one per prompt
            self.samples_log.append({
                "step": self.step, "prompt": rollout.prompts[i], "response": rollout.responses[i],
                "reward": scored.reward[i].item(), "proxy": scored.proxy.mean[i].item(), "sigma": scored.proxy.std[i].item(),
                "gold": scored.gold[i].item() if scored.gold is not None else None,
            })
        return record

    def train(self, steps: int | None = None, progress: bool = False) -> list[dict[str, Any]]:
        """Run until cfg.steps (or ``steps`` more), checkpointing every cfg.save_every steps and at the end."""
        end = self.cfg.steps if steps is None else self.step + steps
        records = []
        while self.step < end:
            record = self.train_step()
            records.append(record)
            if progress:
                print(_format(record), flush=True)
            if self.cfg.save_every and self.step % self.cfg.save_every == 0:
                self.save()
            if self.cfg.monitor_stop and record["monitor_alarm"]:
                if progress:
                    print(f"reward-hacking monitor: alarm at step {self.step} ({record['monitor_signals']}); stopping", flush=True)
                break
        if not (self.cfg.save_every and self.step % self.cfg.save_every == 0):
            self.save()
        return records

    # ---- persistence -----------------------------------------------------------------------
    def save(self) -> Path:
        """Checkpoint (for resume) + the LoRA adapter in peft format + plots."""
        reward_tensors, reward_plain = reward_state(self.reward)
        meta = {"step": self.step, "config": self.cfg.to_dict(), "reward_state": reward_plain}
        path = self.out_dir / CHECKPOINT_DIR
        save_state(path, self.policy, self.optimizer, reward_tensors, meta)
        self.policy.model.save_pretrained(self.out_dir / "adapter")  # adapter_model.safetensors
        if self.cfg.plot:
            plot_run(self.log.read(), self.out_dir)
        return path

    def resume(self, directory: str | Path | None = None) -> int:
        """Restore the last checkpoint; the log is cut back to it. Returns the step reached."""
        directory = Path(directory) if directory is not None else self.out_dir / CHECKPOINT_DIR
        if not directory.exists() and not self.step:  # killed before its first checkpoint: start over
            self._truncate_logs(0)
            return 0
        saved = read_meta(directory).get("config", {})
        if saved.get("algo") != self.cfg.algo:
            raise ValueError(f"{directory}: checkpoint is of algo {saved.get('algo')!r}, this run is {self.cfg.algo!r}")
        now = self.cfg.to_dict()
        changed = sorted(k for k in set(saved) | set(now) if k not in RESUMABLE_CHANGES and saved.get(k) != now.get(k))
        if changed:  # a resumed run must be the run it continues: only its length may change
            raise ValueError(f"{directory}: the run was made with other settings (changed: {', '.join(changed)}); "
                             "it cannot be resumed with these. Use the run's own settings, or a new --out")
        meta, reward_tensors = load_state(directory, self.policy, self.optimizer)
        load_reward_state(self.reward, reward_tensors, meta.get("reward_state", {}))
        self.step = int(meta["step"])
        self._truncate_logs(self.step)
        for record in self.log.read():  # the monitor's state is a function of the log: replay it
            self.monitor.update(record)
        return self.step

    def _truncate_logs(self, step: int) -> None:
        """Drop logged steps after ``step`` (they are redone)."""
        self.log.truncate_after(step)
        self.samples_log.truncate_after(step)
        if self.reference is not None and self.reference.log is not None:
            self.reference.log.truncate_after(step)


def _format(record: dict[str, Any]) -> str:
    keys = ("reward", "proxy", "gold", "uncertainty", "kl_k3", "entropy", "response_length")
    parts = [f"step {record['step']}"]
    parts += [f"{k} {record[k]:.3f}" for k in keys if isinstance(record.get(k), float)]
    if record.get("monitor_signals"):
        parts.append(("ALARM " if record.get("monitor_alarm") else "monitor ") + record["monitor_signals"])
    return "  ".join(parts)
