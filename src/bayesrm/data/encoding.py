"""Turn (prompt, response) pairs into token ids for a reward model.

The response is what is being judged, so truncation keeps it and trims the prompt from the
left (its oldest turns go first). Chat-message prompts are rendered with the tokenizer's chat
template when it has one, else as ``Role: content`` lines. Decoder backbones get an EOS token
after the response so that last-token pooling reads a position that has seen the whole response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from transformers import PreTrainedTokenizerBase

from bayesrm.types import Prompt


def render_messages(messages: list[dict[str, str]]) -> str:
    """Plain-text rendering of chat messages for tokenizers without a chat template."""
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


@dataclass
class PairEncoder:
    """Tokenizes (prompt, response) pairs for one backbone.

    tokenizer:  the backbone's tokenizer.
    max_length: total token budget per sequence, special tokens included.
    is_decoder: decoder backbones use the chat template / EOS convention; encoders use
                ``[CLS] prompt [SEP] response [SEP]`` (tokenizer-defined special tokens).
    """

    tokenizer: PreTrainedTokenizerBase
    max_length: int = 256
    is_decoder: bool = False

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise ValueError(f"max_length must be at least 8, got {self.max_length}")
        self.has_chat_template = bool(getattr(self.tokenizer, "chat_template", None)) and self.is_decoder
        self._template = None if self.is_decoder else self._pair_template()

    def _pair_template(self) -> tuple[list[int], list[int], list[int]]:
        """(prefix, middle, suffix) special tokens the tokenizer puts around a text pair,
        read off by encoding two one-token placeholders (e.g. BERT: [CLS] a [SEP] b [SEP])."""
        tok = self.tokenizer
        special = set(tok.all_special_ids)
        words = [w for w, i in sorted(tok.get_vocab().items(), key=lambda kv: kv[1]) if w.isalpha() and i not in special]
        ids = {w: tok(w, add_special_tokens=False)["input_ids"] for w in words[:200]}
        singles = [w for w, v in ids.items() if len(v) == 1]
        if len(singles) < 2:
            raise ValueError(f"cannot read the pair template of tokenizer {type(tok).__name__}")
        a, b = ids[singles[0]], ids[singles[1]]
        full = tok(singles[0], singles[1])["input_ids"]
        if full.count(a[0]) != 1 or full.count(b[0]) != 1:
            raise ValueError(f"cannot read the pair template of tokenizer {type(tok).__name__}")
        i, j = full.index(a[0]), full.index(b[0])
        return full[:i], full[i + 1 : j], full[j + 1 :]

    # ---- text segments -------------------------------------------------------------------
    def _segments(self, prompt: Prompt, response: str) -> tuple[str, str]:
        """(prompt_text, response_text) such that their concatenation is the full input text."""
        if self.has_chat_template:
            messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
            prefix = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
            full = self.tokenizer.apply_chat_template(
                messages + [{"role": "assistant", "content": response}], tokenize=False
            )
            if full.startswith(prefix):
                return prefix, full[len(prefix):]
            return prefix, response
        text = prompt if isinstance(prompt, str) else render_messages(prompt)
        if self.is_decoder:
            return text + "\n", response
        return text, response

    def _ids(self, text: str) -> list[int]:
        try:
            return self.tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
        except TypeError:  # the fast tokenizers' only word on a lone UTF-16 surrogate
            try:
                text.encode("utf-8")
            except UnicodeEncodeError as err:
                raise ValueError(f"text with a lone surrogate {text[err.start]!r} at character {err.start} "
                                 "is not valid Unicode and cannot be tokenized") from None
            raise

    def encode_one(self, prompt: Prompt, response: str) -> list[int]:
        """Token ids of one pair, truncated to max_length (prompt trimmed from the left)."""
        tok = self.tokenizer
        p_text, r_text = self._segments(prompt, response)
        p_ids, r_ids = self._ids(p_text), self._ids(r_text)  # truncated below
        if self.is_decoder:
            bos = [tok.bos_token_id] if (tok.bos_token_id is not None and not self.has_chat_template) else []
            eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
            budget = self.max_length - len(bos) - len(eos)
            r_ids = r_ids[: max(budget - 1, 1)]
            p_ids = p_ids[len(p_ids) - (budget - len(r_ids)):] if budget - len(r_ids) > 0 else []
            return bos + p_ids + r_ids + eos
        prefix, middle, suffix = self._template  # type: ignore[misc]
        budget = self.max_length - len(prefix) - len(middle) - len(suffix)
        r_ids = r_ids[: max(budget - 1, 1)]
        keep = budget - len(r_ids)
        p_ids = p_ids[len(p_ids) - keep:] if keep > 0 else []
        return prefix + p_ids + middle + r_ids + suffix

    def encode(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> list[list[int]]:
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses")
        return [self.encode_one(p, r) for p, r in zip(prompts, responses)]

    def pad(self, sequences: Sequence[Sequence[int]]) -> dict[str, torch.Tensor]:
        """Right-pad to the longest sequence: {input_ids [B, T], attention_mask [B, T]}."""
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            pad_id = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        width = max((len(s) for s in sequences), default=1)
        ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, s in enumerate(sequences):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return {"input_ids": ids, "attention_mask": mask}

    def __call__(self, prompts: Sequence[Prompt], responses: Sequence[str]) -> dict[str, torch.Tensor]:
        return self.pad(self.encode(prompts, responses))
