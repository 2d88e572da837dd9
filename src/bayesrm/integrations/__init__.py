"""Conservative bayesrm rewards inside OpenRLHF, verl and TRL (see docs/serve.md).

- verl: :func:`bayesrm.integrations.verl.compute_score` (custom_reward_function), calling a
  ``bayesrm serve`` server, or :func:`~bayesrm.integrations.verl.make_compute_score` in-process.
- TRL: :func:`bayesrm.integrations.trl.reward_func` for ``GRPOTrainer(reward_funcs=[...])``; logs
  the mean and std of the reward model through TRL's ``log_metric`` / ``log_extra``.
- OpenRLHF: point ``--remote_rm_url`` at ``http://127.0.0.1:PORT/get_reward``, or at the file
  ``bayesrm/integrations/openrlhf_reward_func.py`` (its ``reward_func`` calls the server).
"""

from bayesrm.integrations.client import LocalRewards, RewardClient, reward_source

__all__ = ["LocalRewards", "RewardClient", "reward_source"]
