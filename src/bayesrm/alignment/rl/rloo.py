"""RLOO: REINFORCE with a leave-one-out baseline over the k samples of each prompt (Ahmadian et al. 2024).

No value head. The sequence score of sample i is the conservative reward (minus
kl_coef * sum_t (log pi_old - log pi_ref) with kl_mode='penalty'); its advantage
A_i = s_i - mean_{j != i} s_j is given to every token of the response, and the policy is
updated with the same clipped surrogate as PPO (with one update epoch the first minibatch
step is exactly REINFORCE-LOO). kl_mode='seq_loss' ('token_loss') adds the UP-RLHF eq. 15 term (its
per-token variant) in the update.
"""

from __future__ import annotations

import torch

from bayesrm.alignment.rl import losses as L
from bayesrm.alignment.rl.config import RLConfig
from bayesrm.alignment.rl.ppo import policy_update
from bayesrm.alignment.rl.rollout import Rollout

__all__ = ["rloo_advantages_for", "policy_update"]


def rloo_advantages_for(rollout: Rollout, scores: torch.Tensor, cfg: RLConfig) -> torch.Tensor:
    """Sequence scores [B] (B = P * k, samples of a prompt adjacent) -> token advantages [B, R]."""
    mask = rollout.response_mask
    seq_scores = scores.to(mask.device).float()  # [B]
    if cfg.kl_mode == "penalty":
        seq_scores = seq_scores - cfg.kl_coef * L.kl_k1(rollout.logprobs, rollout.ref_logprobs, mask)
    k = cfg.samples_per_prompt
    adv = L.rloo_advantages(seq_scores.view(-1, k)).reshape(-1)  # [B]
    if cfg.whiten_advantages and adv.numel() > 1:
        adv = (adv - adv.mean()) / (adv.std(unbiased=False) + 1e-8)
    return adv[:, None] * mask.to(adv.dtype)  # [B, R]
