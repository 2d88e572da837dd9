"""verl custom reward function: ``custom_reward_function.path=<this file>``, ``name=compute_score``.

verl's per-sample reward managers call ``compute_score(data_source, solution_str, ground_truth,
extra_info, **reward_kwargs)`` and accept a float or a dict whose "score" is the reward (the other
keys are logged); its batch reward manager (``reward_model.reward_manager=batch``) calls
``compute_score_batch(data_sources=, solution_strs=, ground_truths=, extra_infos=)`` and takes a
list of such dicts (``name=compute_score_batch``). verl does not pass the prompt, so the
dataset's ``extra_info`` must hold it: ``extra_info["prompt"]`` (text or chat messages; another
key via ``prompt_field``). The reward comes from the server at ``url`` / $BAYESRM_REWARD_URL;
:func:`make_compute_score` builds the same function scoring in-process.

verl's built-in reward-model path can instead POST to the server's vLLM-style /classify.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from bayesrm.integrations.client import LocalRewards, RewardClient, reward_source

_CLIENTS: dict[str, RewardClient] = {}


def _prompt_of(extra_info: Any, prompt_field: str, where: str) -> Any:
    if not isinstance(extra_info, dict) or prompt_field not in extra_info:
        raise ValueError(
            f"{where}: extra_info has no {prompt_field!r}: put each sample's prompt in its extra_info "
            f"(verl does not pass prompts to compute_score)"
        )
    prompt = extra_info[prompt_field]
    return list(prompt) if not isinstance(prompt, str) else prompt  # numpy arrays of messages -> list


def _results(source: RewardClient | LocalRewards, prompts: list[Any], responses: list[str]) -> list[dict[str, float]]:
    out = source.score(prompts, responses)
    return [
        {"score": float(r), "reward_mean": float(m), "reward_std": float(s)}
        for r, m, s in zip(out["reward"], out["mean"], out["std"])
    ]


def _call(source: RewardClient | LocalRewards, solution_str: Any, extra_info: Any, prompt_field: str) -> Any:
    if isinstance(solution_str, str):
        return _results(source, [_prompt_of(extra_info, prompt_field, "compute_score")], [solution_str])[0]
    responses = list(solution_str)
    infos = list(extra_info) if extra_info is not None else [None] * len(responses)
    prompts = [_prompt_of(info, prompt_field, f"compute_score item {i}") for i, info in enumerate(infos)]
    return _results(source, prompts, responses)


def compute_score(
    data_source: Any,
    solution_str: str | Sequence[str],
    ground_truth: Any = None,
    extra_info: Any = None,
    url: str | None = None,
    prompt_field: str = "prompt",
    **kwargs: Any,
) -> dict[str, float] | list[dict[str, float]]:
    """{"score": conservative reward, "reward_mean": mu, "reward_std": sigma} from a bayesrm server."""
    key = url or ""
    if key not in _CLIENTS:
        _CLIENTS[key] = RewardClient(url)
    return _call(_CLIENTS[key], solution_str, extra_info, prompt_field)


def compute_score_batch(
    data_sources: Any,
    solution_strs: Sequence[str],
    ground_truths: Any = None,
    extra_infos: Any = None,
    url: str | None = None,
    prompt_field: str = "prompt",
    **kwargs: Any,
) -> list[dict[str, float]]:
    """The batch form (verl's BatchRewardManager): one request for all responses."""
    return compute_score(data_sources, list(solution_strs), ground_truths, extra_infos, url=url, prompt_field=prompt_field)


def make_compute_score(scorer: Any, reward: str = "mean", prompt_field: str = "prompt") -> Callable[..., Any]:
    """A ``compute_score`` scoring in-process with ``scorer`` (or a RewardClient / LocalRewards)."""
    source = reward_source(scorer, reward)

    def local_compute_score(data_source: Any, solution_str: Any, ground_truth: Any = None, extra_info: Any = None, **kwargs: Any) -> Any:
        return _call(source, solution_str, extra_info, prompt_field)

    return local_compute_score
