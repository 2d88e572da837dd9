"""The Bradley-Terry loss for point reward models and ensembles.

P(y_w > y_l | x) = sigmoid(f),  f = r(x, y_w) - r(x, y_l) - m   (m: optional margin)
loss = -mean log sigmoid(f) + c * mean((r_w + r_l)^2)          (c: reward centering, as in TRL)

For an ensemble the rewards are [K, B] and the target is either
- ``members``: the mean over members of each member's own loss (a deep ensemble), or
- ``mean``: the loss of the ensemble-mean reward (UP-RLHF eq. 12).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

TARGETS = ("members", "mean")


def bradley_terry_loss(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_coef: float = 0.0,
    target: str = "members",
    member_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Bradley-Terry negative log-likelihood and training statistics.

    r_chosen, r_rejected: [B] or [K, B] rewards.
    margin:               [B] optional preference margin subtracted from f.
    member_weights:       [K, B] optional per-member weights of each pair (e.g. bootstrap counts),
                          giving each ensemble member its own effective data order / resample.
    Returns (loss, stats) with stats: loss, accuracy, margin, reward_mean and, for ensembles,
    acc_member_{k}.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(f"chosen rewards {tuple(r_chosen.shape)} and rejected {tuple(r_rejected.shape)} differ")
    ensemble = r_chosen.ndim == 2
    f = r_chosen - r_rejected  # [B] or [K, B]
    if ensemble and target == "mean":
        if member_weights is not None:
            raise ValueError(
                "ensemble_target='mean' trains the ensemble-mean reward, which has no per-member loss for "
                "bootstrap weights to weigh; use ensemble_target='members' or turn bootstrap off"
            )
        f = f.mean(0)  # [B]: the loss of the mean reward
    if margin is not None:
        f = f - margin.to(f.dtype)
    nll = -F.logsigmoid(f)  # [B] or [K, B]
    if member_weights is not None and nll.ndim == 2:
        w = member_weights.to(nll.dtype)
        loss = ((nll * w).sum(1) / w.sum(1).clamp_min(1e-8)).mean()
    else:
        loss = nll.mean()
    if center_coef:
        loss = loss + center_coef * ((r_chosen + r_rejected) ** 2).mean()

    with torch.no_grad():
        diff = r_chosen - r_rejected  # [B] or [K, B]
        mean_diff = diff.mean(0) if ensemble else diff
        stats = {
            "loss": float(loss.detach()),
            "accuracy": float((mean_diff > 0).float().mean()),
            "margin": float(mean_diff.mean()),
            "reward_mean": float(torch.cat([r_chosen.reshape(-1), r_rejected.reshape(-1)]).mean()),
        }
        if ensemble:
            for k, acc in enumerate((diff > 0).float().mean(1).tolist()):
                stats[f"acc_member_{k}"] = acc
    return loss, stats
