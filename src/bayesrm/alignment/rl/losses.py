"""The maths of PPO and RLOO for language models, as pure tensor functions.

Shapes: B sequences, R response tokens (right-padded); ``mask`` [B, R] is 1 on real response
tokens (the EOS included) and 0 after it. Every mean below is over masked tokens only.
References: Schulman et al. 2017 (PPO), Schulman et al. 2016 (GAE), Ahmadian et al. 2024 (RLOO),
Schulman 2020 "Approximating KL divergence" (k1, k3), Zhai et al. 2023 (UP-RLHF eq. 15).
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of x over positions where mask is 1 (all dims, or along ``dim``)."""
    mask = mask.to(x.dtype)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp_min(1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp_min(1.0)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / std over masked positions (population std); masked-out positions become 0."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask.to(x.dtype)


# ---- KL estimators -------------------------------------------------------------------------
def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """k1 estimate of KL(pi || pi_ref) per sequence: sum_t (log pi - log pi_ref). [B, R] -> [B]."""
    return ((logp - ref_logp) * mask.to(logp.dtype)).sum(-1)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """k3 estimate per sequence: sum_t (rho - 1 - log rho), rho = pi_ref / pi (>= 0, unbiased). [B, R] -> [B]."""
    log_rho = ref_logp - logp  # [B, R]
    return ((log_rho.exp() - 1.0 - log_rho) * mask.to(logp.dtype)).sum(-1)


def kl_squared_loss(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token variant of the UP-RLHF eq. 15 KL term: E_t[(log pi_theta - log pi_ref)^2], the mean
    over all response tokens of the batch (scalar; kl_mode 'token_loss')."""
    return masked_mean((logp - ref_logp) ** 2, mask)


def kl_squared_sequence_loss(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """UP-RLHF eq. 15 KL term as written: E_y[(log pi_theta(y|x) - log pi_ref(y|x))^2], the square of the
    sequence log-ratio sum_t (log pi - log pi_ref), averaged over sequences (scalar; kl_mode 'seq_loss')."""
    seq_log_ratio = ((logp - ref_logp) * mask.to(logp.dtype)).sum(-1)  # [B]
    return (seq_log_ratio**2).mean()


# ---- rewards and advantages ----------------------------------------------------------------
def token_rewards(
    scores: torch.Tensor,
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    kl_coef: float,
) -> torch.Tensor:
    """Per-token rewards [B, R]: -kl_coef * (log pi - log pi_ref) on every response token, plus the
    sequence score [B] on the last response token (kl_coef = 0 gives the score alone)."""
    rewards = -kl_coef * (logp - ref_logp) * mask.to(logp.dtype)  # [B, R]
    last = mask.long().sum(-1).clamp_min(1) - 1  # [B] index of the last real response token
    rewards[torch.arange(rewards.shape[0], device=rewards.device), last] += scores.to(rewards.dtype)
    return rewards


def gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    mask: torch.Tensor,
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens (episode ends after the last token).

    delta_t = r_t + gamma V_{t+1} - V_t,  A_t = delta_t + gamma lam A_{t+1},  returns = A + V.
    rewards, values, mask [B, R] -> (advantages [B, R], returns [B, R]), both 0 where mask is 0.
    """
    mask = mask.to(values.dtype)
    values = values * mask
    advantages = torch.zeros_like(values)
    next_adv = torch.zeros_like(values[:, 0])  # [B]
    next_value = torch.zeros_like(values[:, 0])  # [B]
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # [B]
        next_adv = (delta + gamma * lam * next_adv) * mask[:, t]
        advantages[:, t] = next_adv
        next_value = values[:, t]
    return advantages, (advantages + values) * mask


def rloo_advantages(scores: torch.Tensor) -> torch.Tensor:
    """Leave-one-out baseline over the k samples of each prompt (RLOO).

    scores [P, k] -> A_i = r_i - (1 / (k - 1)) sum_{j != i} r_j, shape [P, k].
    """
    k = scores.shape[-1]
    if k < 2:
        raise ValueError(f"RLOO needs at least 2 samples per prompt, got {k}")
    baseline = (scores.sum(-1, keepdim=True) - scores) / (k - 1)  # [P, k]
    return scores - baseline


# ---- losses --------------------------------------------------------------------------------
def clipped_policy_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate: mean_t max(-A ratio, -A clip(ratio, 1 - eps, 1 + eps)), ratio = pi / pi_old.

    Returns (loss, clip fraction), both scalars.
    """
    ratio = (logp - old_logp).exp()  # [B, R]
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    clipfrac = masked_mean((clipped > unclipped).float(), mask)
    return loss, clipfrac


def clipped_value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """PPO clipped value loss: 0.5 mean_t max((V - R)^2, (V_old + clip(V - V_old, +-eps) - R)^2).

    Returns (loss, fraction of tokens where the clipped branch is taken).
    """
    clipped_values = old_values + (values - old_values).clamp(-clip_range, clip_range)
    loss_unclipped = (values - returns) ** 2
    loss_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(loss_unclipped, loss_clipped), mask)
    clipfrac = masked_mean((loss_clipped > loss_unclipped).float(), mask)
    return loss, clipfrac


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution softmax(logits): logsumexp(z) - sum_v p_v z_v. [..., V] -> [...]."""
    probs = torch.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (probs * logits).sum(-1)
