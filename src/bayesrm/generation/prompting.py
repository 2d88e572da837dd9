"""The one prompting layer of policy sampling, shared by best-of-n and RL.

- :func:`render_prompt`  a prompt (text or chat messages) -> the text the policy continues;
- :func:`encode_prompt`  -> its token ids (optionally trimmed from the left);
- :func:`stop_token_ids` the tokens that end a response;
- :func:`prompt_key`     a stable string id of a prompt (sample-cache key, per-prompt reward statistics).

Both :class:`~bayesrm.generation.sampler.PolicySampler` and
:func:`~bayesrm.alignment.rl.rollout.sample_rollout` go through these functions, so for the same
policy and prompt they sample from the same context and stop at the same tokens.
"""

from __future__ import annotations

import json
from typing import Any

from bayesrm.data.encoding import render_messages
from bayesrm.types import Prompt


def render_prompt(tokenizer: Any, prompt: Prompt, chat_template: bool = True) -> tuple[str, bool]:
    """(text, has_special_tokens): the chat template with the generation prompt when ``chat_template``
    is set and the tokenizer has one (the text then already holds its special tokens), else the
    plain text (a message list as ``Role: content`` lines)."""
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if chat_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True), True
    return (prompt if isinstance(prompt, str) else render_messages(messages)), False


def encode_prompt(tokenizer: Any, prompt: Prompt, chat_template: bool = True, max_tokens: int | None = None) -> list[int]:
    """Token ids of :func:`render_prompt`'s text (the tokenizer's special tokens added only when the
    template has not put them there), the last ``max_tokens`` of them when given."""
    text, templated = render_prompt(tokenizer, prompt, chat_template)
    ids = list(tokenizer(text, add_special_tokens=not templated)["input_ids"])
    if max_tokens is not None:
        ids = ids[-max_tokens:]
    if not ids:
        raise ValueError(f"prompt {prompt!r} encodes to no tokens")
    return ids


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Sorted token ids that end a response: the tokenizer's EOS plus every EOS id of the model's
    generation config (an int or a list; chat models often list several)."""
    ids = {int(tokenizer.eos_token_id)} if tokenizer.eos_token_id is not None else set()
    extra = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(extra, int):
        extra = [extra]
    ids.update(int(e) for e in extra or [])
    return sorted(ids)


def prompt_key(prompt: Prompt) -> str:
    """The id of a prompt: its text, or ``messages:`` + the canonical JSON of a message list."""
    if isinstance(prompt, str):
        return prompt
    return "messages:" + json.dumps(prompt, sort_keys=True, ensure_ascii=False)
