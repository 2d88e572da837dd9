"""Per-prompt reference levels r_ref(x) of log-sigmoid rewards, from reference-policy samples.

``log sigmoid(r - r_ref(x))`` (Wang et al. 2024) needs, for *every* prompt x the policy is trained
on, a quantile of the reward over samples of the reference policy for x. RL meets new prompts at
every step, so :class:`ReferenceLevels` draws ``samples_per_prompt`` reference samples for each
prompt the first time it is seen (once per prompt), scores them with the proxy (or one proxy per
term of an AND sum) and adds them to the reward: the first batch ``fit``\\s the reward (this also
fixes a ``zscore`` standardisation on reference samples), later ones ``add_reference``. The levels
live in the reward's state, so an RL checkpoint restores them and a resumed run never refits them
on the trained policy; ``state_path`` (the TRL adapter) keeps that state in a JSON file instead.

Samples come from a ``sampler(prompts, n) -> [len(prompts)][n] texts``; :func:`reference_sampler`
builds one on the shared seeded sampler (``bayesrm.generation.PolicySampler``: sample i of prompt
x is seeded by (seed, x, i), so the samples of a prompt do not depend on when it was first seen).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from bayesrm.alignment.rl.reward_fn import Reward, as_proxies, prompt_key, reward_input
from bayesrm.alignment.rl.tracking import JsonlLog
from bayesrm.fileio import atomic_write_text
from bayesrm.types import Prompt, RewardScorer

Sampler = Callable[[list[Prompt], int], list[list[str]]]


def reference_sampler(
    model: Any,
    tokenizer: Any,
    *,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int = 0,
    disable_adapter: bool = True,
    cache_dir: str | Path | None = None,
) -> Sampler:
    """A sampler of the reference policy: ``model`` itself, or with ``disable_adapter`` a peft model's
    base (adapter off while sampling). ``cache_dir`` keeps the samples on disk (generation/cache.py)."""
    from bayesrm.generation.sampler import PolicySampler, SamplingConfig

    config = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed)
    sampler = PolicySampler(model, tokenizer, "reference", config, cache_dir=cache_dir)

    def sample(prompts: list[Prompt], n: int) -> list[list[str]]:
        off = getattr(model, "disable_adapter", None) if disable_adapter else None
        with (off() if off is not None else contextlib.nullcontext()), torch.no_grad():
            return sampler.sample(prompts, n, progress=False)

    return sample


def sampled_levels(reward: Reward) -> list[Any]:
    """The log_sigmoid stages of ``reward`` whose levels come from reference samples."""
    from bayesrm.rewards import LogSigmoid, PromptReference

    stages = reward.stages() if hasattr(reward, "stages") else []
    return [s for s in stages if isinstance(s, LogSigmoid) and (s.reference is None or isinstance(s.reference, PromptReference))]


class ReferenceLevels:
    """Draws reference samples once per new prompt and adds their levels to a log-sigmoid reward."""

    def __init__(
        self,
        sampler: Sampler,
        proxy: RewardScorer | Sequence[RewardScorer],
        samples_per_prompt: int = 4,
        batch_size: int = 32,
        log_path: str | Path | None = None,
        state_path: str | Path | None = None,
    ):
        if samples_per_prompt < 1:
            raise ValueError(f"samples_per_prompt must be >= 1, got {samples_per_prompt}")
        self.sampler, self.proxies = sampler, as_proxies(proxy)
        self.samples_per_prompt, self.batch_size = samples_per_prompt, batch_size
        self.log = JsonlLog(log_path) if log_path is not None else None
        self.state_path = Path(state_path) if state_path is not None else None
        self._restored = False

    @staticmethod
    def known(reward: Reward) -> set[str]:
        """Prompt ids that every sampled log_sigmoid stage of ``reward`` has a level for."""
        stages = sampled_levels(reward)
        if not stages or any(s.reference is None for s in stages):
            return set()
        return set.intersection(*(set(s.reference.quantile(s.q)) for s in stages))

    def ensure(self, reward: Reward, prompts: Sequence[Prompt], step: int | None = None) -> int:
        """Give ``reward`` levels for every prompt of the batch; returns how many prompts were new."""
        if not sampled_levels(reward):
            return 0
        self.restore(reward)
        known = self.known(reward)
        new = list({prompt_key(p): p for p in prompts if prompt_key(p) not in known}.items())
        if not new:
            return 0
        n = self.samples_per_prompt
        texts = self.sampler([p for _, p in new], n)  # [len(new)][n]
        expanded = [p for _, p in new for _ in range(n)]
        responses = [t for row in texts for t in row]
        if len(responses) != len(expanded):
            raise ValueError(f"the reference sampler returned {len(responses)} samples for {len(new)} prompts x {n}")
        ids = [k for k, _ in new for _ in range(n)]
        preds = [proxy.score(expanded, responses, batch_size=self.batch_size) for proxy in self.proxies]
        target = reward_input(reward, preds)
        if reward.is_fitted():
            reward.add_reference(target, ids)
        else:
            reward.fit(target, ids)  # the first reference batch also fixes standardisations (zscore)
        self._write(reward, new, texts, preds, step)
        return len(new)

    # ---- persistence -------------------------------------------------------------------------
    def _write(self, reward: Reward, new: list, texts: list[list[str]], preds: list, step: int | None) -> None:
        if self.log is not None:
            levels = [s.reference.quantile(s.q) for s in sampled_levels(reward)]
            n = self.samples_per_prompt
            for j, (key, prompt) in enumerate(new):
                self.log.append({
                    "step": step or 0, "prompt": prompt, "responses": texts[j],
                    "proxy": [p.mean[j * n : (j + 1) * n].tolist() for p in preds],
                    "sigma": [p.std[j * n : (j + 1) * n].tolist() for p in preds],
                    "levels": [lv[key] for lv in levels],
                })
        if self.state_path is not None:
            state = {k: (v.tolist() if isinstance(v, torch.Tensor) else v) for k, v in reward.state_dict().items()}
            atomic_write_text(self.state_path, json.dumps({"reward": reward.spec(), "state": state}))

    def restore(self, reward: Reward) -> None:
        """Load ``state_path`` into a reward that has no levels yet (a resumed TRL run); once per reward."""
        if self._restored or self.state_path is None or not self.state_path.is_file() or self.known(reward):
            return
        self._restored = True
        try:
            saved = json.loads(self.state_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{self.state_path}: corrupt reference state ({err.msg})") from err
        if saved.get("reward") != reward.spec():
            raise ValueError(f"{self.state_path}: reference levels of reward {saved.get('reward')!r}, not {reward.spec()!r}")
        state = {k: (torch.tensor(v, dtype=torch.float64) if isinstance(v, (int, float)) else v) for k, v in saved["state"].items()}
        reward.load_state_dict(state)
