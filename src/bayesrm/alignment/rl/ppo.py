"""PPO for a LoRA policy with a value head (cleanrl-style, one function per stage).

    rollout  -> sample_rollout (rollout.py): responses, log pi_old, log pi_ref, V_old
    score    -> score_batch (reward_fn.py): conservative reward of the proxy, on the last token
    advantages -> ppo_advantages: per-token rewards (optional KL penalty) + GAE
    update   -> policy_update: clipped policy loss + vf_coef * clipped value loss
                - ent_coef * entropy (+ kl_coef * E_y[(sum_t log pi - log pi_ref)^2], UP-RLHF eq. 15,
                with kl_mode 'seq_loss'; or its per-token mean E_t[(log pi - log pi_ref)^2] with 'token_loss')
"""

from __future__ import annotations

from collections import defaultdict

import torch

from bayesrm.alignment.rl import losses as L
from bayesrm.alignment.rl.config import RLConfig
from bayesrm.alignment.rl.rollout import PolicyWithValue, Rollout, gather_logprobs


def ppo_advantages(rollout: Rollout, scores: torch.Tensor, cfg: RLConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Sequence scores [B] -> (advantages [B, R], returns [B, R]) by GAE on per-token rewards.

    With kl_mode='penalty' each token also gets -kl_coef (log pi_old - log pi_ref).
    """
    mask = rollout.response_mask
    kl_coef = cfg.kl_coef if cfg.kl_mode == "penalty" else 0.0
    rewards = L.token_rewards(scores.to(mask.device), rollout.logprobs, rollout.ref_logprobs, mask, kl_coef)  # [B, R]
    advantages, returns = L.gae(rewards, rollout.values, mask, cfg.gamma, cfg.lam)  # [B, R] each
    if cfg.whiten_advantages:
        advantages = L.masked_whiten(advantages, mask)
    return advantages, returns


def policy_update(
    policy: PolicyWithValue,
    optimizer: torch.optim.Optimizer,
    rollout: Rollout,
    advantages: torch.Tensor,
    returns: torch.Tensor | None,
    cfg: RLConfig,
) -> dict[str, float]:
    """update_epochs passes of minibatch gradient steps on one rollout batch.

    advantages [B, R]; returns [B, R] for PPO (value loss on) or None for RLOO (no value head).
    Minibatch order comes from the global torch RNG (checkpointed, so resume is exact).
    """
    policy.train()
    mask, tokens = rollout.response_mask, rollout.response_tokens
    R = mask.shape[1]
    stats: dict[str, list[float]] = defaultdict(list)
    params = [p for p in policy.parameters() if p.requires_grad]
    for _ in range(cfg.update_epochs):
        order = torch.randperm(mask.shape[0])
        for start in range(0, mask.shape[0], cfg.minibatch_size):
            idx = order[start : start + cfg.minibatch_size].to(mask.device)
            mb_mask = mask[idx]  # [b, R]
            logits, values = policy(
                rollout.input_ids[idx], rollout.attention_mask[idx], R, cfg.temperature, with_values=returns is not None
            )  # [b, R, V], [b, R] | None
            logp = gather_logprobs(logits, tokens[idx])  # [b, R]
            pg_loss, clipfrac = L.clipped_policy_loss(logp, rollout.logprobs[idx], advantages[idx], mb_mask, cfg.clip_range)
            entropy = L.masked_mean(L.entropy_from_logits(logits), mb_mask)
            loss = pg_loss - cfg.ent_coef * entropy
            if returns is not None:
                v_loss, v_clipfrac = L.clipped_value_loss(
                    values, rollout.values[idx], returns[idx], mb_mask, cfg.clip_range_value
                )
                loss = loss + cfg.vf_coef * v_loss
                stats["value_loss"].append(v_loss.item())
                stats["value_clipfrac"].append(v_clipfrac.item())
            if cfg.kl_mode in ("seq_loss", "token_loss"):
                kl_loss = L.kl_squared_sequence_loss if cfg.kl_mode == "seq_loss" else L.kl_squared_loss
                kl_sq = kl_loss(logp, rollout.ref_logprobs[idx], mb_mask)
                loss = loss + cfg.kl_coef * kl_sq
                stats["kl_sq_loss"].append(kl_sq.item())

            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.max_grad_norm > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
                stats["grad_norm"].append(float(grad_norm))
            optimizer.step()

            with torch.no_grad():
                log_ratio = logp - rollout.logprobs[idx]
                stats["approx_kl_old"].append(L.masked_mean(0.5 * log_ratio**2, mb_mask).item())
            stats["policy_loss"].append(pg_loss.item())
            stats["clipfrac"].append(clipfrac.item())
            stats["update_entropy"].append(entropy.item())
            stats["loss"].append(loss.item())
    return {k: sum(v) / len(v) for k, v in stats.items()}
