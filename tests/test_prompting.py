"""One prompting layer for best-of-n and RL: same rendered prompt, same stop tokens, same sampler."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from bayesrm.alignment.rl import sample_rollout
from bayesrm.alignment.rl.rollout import PolicyWithValue
from bayesrm.generation import PolicySampler, SamplingConfig, generate_rows
from bayesrm.generation.prompting import encode_prompt, prompt_key, render_prompt, stop_token_ids
from bayesrm.rewards import parse_reward

TEMPLATE = (
    "{% for m in messages %}<s> {{ m['role'] }} {{ m['content'] }} </s> {% endfor %}"
    "{% if add_generation_prompt %}<s> assistant{% endif %}"
)
PROMPTS = ["hello how are you", [{"role": "user", "content": "what do you think of the cat"}]]


@pytest.fixture(params=["template", "plain"])
def tokenizer(request, tiny_tokenizer_dir):
    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tok.bos_token, tok.eos_token = "<s>", "</s>"
    tok.padding_side = "left"
    tok.chat_template = TEMPLATE if request.param == "template" else None
    return tok


def tiny_policy(tok, extra_eos: int | None = None):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
        intermediate_size=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(cfg).eval()
    model.generation_config.eos_token_id = [tok.eos_token_id] + ([extra_eos] if extra_eos is not None else [])
    from peft import LoraConfig, get_peft_model

    peft = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    return PolicyWithValue(peft, value_head=False)


def test_render_and_encode(tokenizer):
    text, templated = render_prompt(tokenizer, PROMPTS[0])
    assert templated == bool(tokenizer.chat_template)
    if templated:
        assert text == "<s> user hello how are you </s> <s> assistant"
        assert encode_prompt(tokenizer, PROMPTS[0]) == tokenizer(text, add_special_tokens=False)["input_ids"]
    else:
        assert text == "hello how are you"
        assert render_prompt(tokenizer, PROMPTS[1])[0] == "User: what do you think of the cat"
        assert encode_prompt(tokenizer, PROMPTS[0]) == tokenizer(text)["input_ids"]  # special tokens added
    full = encode_prompt(tokenizer, PROMPTS[1])
    assert encode_prompt(tokenizer, PROMPTS[1], max_tokens=3) == full[-3:]  # trimmed from the left
    assert prompt_key("abc") == "abc"
    assert prompt_key(PROMPTS[1]) == prompt_key([{"content": "what do you think of the cat", "role": "user"}])
    assert prompt_key(PROMPTS[1]).startswith("messages:")


def test_best_of_n_and_rl_render_the_same_prompt_and_stop_at_the_same_tokens(tokenizer):
    extra = tokenizer.convert_tokens_to_ids("w3")
    policy = tiny_policy(tokenizer, extra_eos=extra)
    sampler = PolicySampler(policy.model, tokenizer, "tiny", SamplingConfig(max_new_tokens=8, dtype="fp32"))
    eos = stop_token_ids(policy.model, tokenizer)
    assert sampler.eos_ids == eos == sorted([tokenizer.eos_token_id, extra])
    ro = sample_rollout(policy, tokenizer, PROMPTS, samples_per_prompt=3, max_prompt_tokens=64, max_new_tokens=8)
    P = ro.input_ids.shape[1] - ro.response_mask.shape[1]
    for i, prompt in enumerate(ro.prompts):
        rendered = ro.input_ids[i, :P][ro.attention_mask[i, :P].bool()].tolist()  # unpadded prompt of sequence i
        assert rendered == sampler.encode_prompt(prompt)
        n = int(ro.response_mask[i].sum())
        response = ro.response_tokens[i, :n].tolist()
        stops = [t for t in response if t in eos]
        assert stops == [] or stops == [response[-1]]  # a response ends at its first stop token, either one


def test_rl_rollouts_are_the_shared_samplers_draws(tokenizer):
    """sample_rollout = generate_rows (the best-of-n sampler's loop) with seeds drawn from torch's RNG."""
    policy = tiny_policy(tokenizer)
    torch.manual_seed(5)
    ro = sample_rollout(policy, tokenizer, PROMPTS, samples_per_prompt=4, max_prompt_tokens=64, max_new_tokens=10,
                        temperature=0.9)
    torch.manual_seed(5)
    seeds = torch.randint(0, 2**62, (8,), dtype=torch.long).tolist()
    encoded = [encode_prompt(tokenizer, p) for p in PROMPTS]
    gens = generate_rows(policy.model, encoded, [0] * 4 + [1] * 4, seeds, stop_token_ids(policy.model, tokenizer),
                         tokenizer.pad_token_id, 10, temperature=0.9)
    for i, g in enumerate(gens):
        n = int(ro.response_mask[i].sum())
        assert ro.response_tokens[i, :n].tolist() == list(g.token_ids) + ([g.stop_id] if g.finished else [])
        # the rollout's fp32 scoring pass gives the log-probs the sampler returned with its draws
        torch.testing.assert_close(ro.logprobs[i, :n], torch.tensor(g.logprobs), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("spec,needs", [
    ("min", True), ("zscore|min|log_sigmoid:q=0.5", True), ("mean", False), ("std:k=2", False),
    ("zscore|var:k=1", False), ("log_sigmoid", False), ("up:beta2=0.5", False),
])
def test_reward_says_whether_it_needs_members(spec, needs):
    assert parse_reward(spec).needs_members is needs
