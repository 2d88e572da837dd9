"""On-policy rollouts for a LoRA causal-LM policy: sample, then score every sampled token.

Layout of a rollout batch of B sequences: prompts are left-padded to P tokens, responses
right-padded to R tokens, so every response starts at column P:

    input_ids  [B, P + R] = [pad.. prompt | response pad..]
    attention  [B, P + R] = [0..   1..    | 1..(to EOS) 0..]
    logits for response token t are read at column P - 1 + t.

The reference policy is the same network with the LoRA adapter disabled (peft
``disable_adapter()``), so no second copy of the model is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from bayesrm.alignment.rl.losses import entropy_from_logits
from bayesrm.generation.decoding import Generation
from bayesrm.generation.precision import resolve_dtype
from bayesrm.generation.prompting import encode_prompt, stop_token_ids
from bayesrm.generation.sampler import SamplingConfig, TransformersBackend
from bayesrm.types import Prompt


class PolicyWithValue(nn.Module):
    """A peft LoRA causal LM with an optional scalar value head on its last hidden states."""

    def __init__(self, model: nn.Module, value_head: bool = True):
        super().__init__()
        self.model = model  # peft.PeftModel around a causal LM
        hidden = model.get_input_embeddings().weight.shape[1]
        self.value_head = nn.Linear(hidden, 1) if value_head else None
        if self.value_head is not None:
            nn.init.normal_(self.value_head.weight, std=hidden**-0.5 * 0.1)
            nn.init.zeros_(self.value_head.bias)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def reference(self):
        """Context in which the forward pass is the frozen base policy (LoRA disabled)."""
        return self.model.disable_adapter()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        response_len: int,
        temperature: float = 1.0,
        with_values: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tempered logits of the response tokens [B, R, V] and, if asked, values [B, R].

        input_ids, attention_mask [B, P + R]; R = response_len. Position ids follow the attention
        mask (as in ``generate``) so left padding does not shift positions.
        """
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_min(0)  # [B, P + R]
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            logits_to_keep=response_len + 1,
            output_hidden_states=with_values,
            use_cache=False,
        )
        logits = out.logits[:, :-1].float() / temperature  # [B, R, V]: position P-1+t predicts token t
        values = None
        if with_values:
            if self.value_head is None:
                raise ValueError("this policy has no value head")
            hidden = out.hidden_states[-1][:, -response_len - 1 : -1]  # [B, R, H]
            values = self.value_head(hidden.float()).squeeze(-1)  # [B, R]
        return logits, values


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log softmax(logits)[token]: logits [B, R, V], tokens [B, R] -> [B, R]."""
    return torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


@dataclass
class Rollout:
    """One batch of sampled responses and what the losses need about them (all detached)."""

    prompts: list[Prompt]  # [B] the prompt of each sequence (repeated samples_per_prompt times)
    responses: list[str]  # [B] decoded responses
    input_ids: torch.Tensor  # [B, P + R]
    attention_mask: torch.Tensor  # [B, P + R]
    response_mask: torch.Tensor  # [B, R] 1 on response tokens up to and including EOS
    logprobs: torch.Tensor  # [B, R] log pi_old(y_t | x, y_<t)
    ref_logprobs: torch.Tensor  # [B, R] log pi_ref(y_t | x, y_<t)
    entropy: torch.Tensor  # [B, R] entropy of pi_old at each response position
    values: torch.Tensor | None  # [B, R] V_old, or None without a value head

    @property
    def response_tokens(self) -> torch.Tensor:
        """[B, R] sampled token ids."""
        return self.input_ids[:, -self.response_mask.shape[1] :]

    @property
    def lengths(self) -> torch.Tensor:
        """[B] response lengths in tokens (EOS included)."""
        return self.response_mask.sum(-1)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and mask [B, P] of token-id rows."""
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ids in enumerate(rows):
        input_ids[i, width - len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
        mask[i, width - len(ids) :] = 1
    return input_ids, mask


def right_pad_responses(gens: Sequence[Generation], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Response ids [B, R] (stop token included, then pad) and their mask [B, R], R = longest response."""
    rows = [list(g.token_ids) + ([g.stop_id] if g.finished else []) for g in gens]
    width = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, : len(r)] = 1
    return ids, mask


def response_mask_from_tokens(tokens: torch.Tensor, eos: Sequence[int]) -> torch.Tensor:
    """[B, R] mask: 1 up to and including the first EOS token (all ones when there is none)."""
    if not eos:
        return torch.ones_like(tokens)
    is_eos = torch.isin(tokens, torch.tensor(list(eos), device=tokens.device))  # [B, R]
    after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0  # strictly after the first EOS
    return (~after_eos).long()


@torch.no_grad()
def sample_rollout(
    policy: PolicyWithValue,
    tokenizer: Any,
    prompts: Sequence[Prompt],
    *,
    samples_per_prompt: int,
    max_prompt_tokens: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    chat_template: bool = True,
    forward_batch_size: int = 32,
    dtype: str = "fp32",
) -> Rollout:
    """Sample ``samples_per_prompt`` responses per prompt with the shared sampler (seeds from the
    global torch RNG) and score their tokens in fp32 under the current policy (log-probs, entropy,
    values) and the reference policy (log-probs).

    dtype: precision of the sampling pass only (fp32 | bf16 | auto; bf16 copies the policy each
    call and samples from a slightly different distribution, so fp32 keeps PPO exactly on-policy).
    """
    device = policy.device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = stop_token_ids(policy.model, tokenizer)
    expanded = [p for p in prompts for _ in range(samples_per_prompt)]  # [B], samples of a prompt adjacent
    encoded = [encode_prompt(tokenizer, p, chat_template, max_prompt_tokens) for p in prompts]  # [U] ids
    rows = [i for i in range(len(prompts)) for _ in range(samples_per_prompt)]  # [B] prompt of each sequence

    was_training = policy.training
    policy.eval()
    # The shared sampler (bayesrm.generation): exact ancestral sampling from softmax(logits / T) with
    # only the given top_k / top_p, so no setting shipped in the model's generation_config changes
    # what is sampled. One seed per sequence from the global torch RNG (checkpointed: exact resume).
    seeds = torch.randint(0, 2**62, (len(rows),), dtype=torch.long).tolist()  # [B]
    config = SamplingConfig(max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, dtype=dtype)
    sampler = TransformersBackend(policy.model, eos, pad_id, resolve_dtype(dtype, device))
    gens = sampler.generate(encoded, rows, seeds, config)
    prompt_ids, prompt_mask = left_pad([encoded[r] for r in rows], pad_id)  # [B, P]
    response, response_mask = right_pad_responses(gens, pad_id)  # [B, R]
    prompt_ids, prompt_mask = prompt_ids.to(device), prompt_mask.to(device)
    response, response_mask = response.to(device), response_mask.to(device)
    input_ids = torch.cat([prompt_ids, response], dim=1)  # [B, P + R]
    attention_mask = torch.cat([prompt_mask, response_mask], dim=1)  # [B, P + R]
    R = response.shape[1]

    logprobs, ref_logprobs, entropy, values = [], [], [], []
    for start in range(0, input_ids.shape[0], forward_batch_size):
        ids, am = input_ids[start : start + forward_batch_size], attention_mask[start : start + forward_batch_size]
        tok = response[start : start + forward_batch_size]
        logits, v = policy(ids, am, R, temperature, with_values=policy.value_head is not None)
        logprobs.append(gather_logprobs(logits, tok))
        entropy.append(entropy_from_logits(logits))
        values.append(v)
        with policy.reference():
            ref_logits, _ = policy(ids, am, R, temperature)
        ref_logprobs.append(gather_logprobs(ref_logits, tok))
    policy.train(was_training)

    texts = tokenizer.batch_decode(
        [row[: int(n)].tolist() for row, n in zip(response, response_mask.sum(-1))], skip_special_tokens=True
    )
    return Rollout(
        prompts=expanded,
        responses=[t.strip() for t in texts],
        input_ids=input_ids,
        attention_mask=attention_mask,
        response_mask=response_mask,
        logprobs=torch.cat(logprobs),
        ref_logprobs=torch.cat(ref_logprobs),
        entropy=torch.cat(entropy),
        values=torch.cat(values) if policy.value_head is not None else None,
    )

