"""Prepacked oneDNN bf16 weights for the sampler's linear layers (bayesrm.generation.packing): the
same outputs as F.linear bit for bit, hence the same samples and log-probs; restored afterwards."""

from __future__ import annotations

import functools

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import bayesrm.generation.sampler as sampler_module
from bayesrm.generation import PolicySampler, SamplingConfig
from bayesrm.generation.packing import packed_linears, packing_available

pytestmark = pytest.mark.skipif(not packing_available(), reason="oneDNN bf16 matmuls not available on this CPU")


@pytest.fixture(scope="module")
def lm(tokenizer):
    """A tiny Llama with grouped-query attention and a scaled-up LM head (peaked distributions)."""
    torch.manual_seed(5)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=96, max_position_embeddings=256,
        eos_token_id=6, pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    return model


@pytest.mark.parametrize("shape", [(96, 64), (64, 96), (37, 29), (576, 192)])
def test_packed_linear_equals_f_linear_bit_for_bit(shape):
    torch.manual_seed(0)
    out_features, in_features = shape
    layer = torch.nn.Linear(in_features, out_features).bfloat16()
    plain = torch.nn.Linear(in_features, out_features, bias=False).bfloat16()
    with torch.inference_mode(), packed_linears(layer), packed_linears(plain):
        assert "forward" in vars(layer) and "forward" in vars(plain)
        for rows in [1, 2, 7, 31, 64, 65, 130]:
            x = torch.randn(rows, 1, in_features).bfloat16()  # [rows, 1, in], as at a decode step
            assert torch.equal(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias))
            assert torch.equal(plain(x), torch.nn.functional.linear(x, plain.weight))
    assert "forward" not in vars(layer)  # the module's own forward is back


def test_only_plain_bf16_linears_are_packed_and_grad_mode_falls_back():
    class Scaled(torch.nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)

    model = torch.nn.Sequential(torch.nn.Linear(8, 8).bfloat16(), torch.nn.Linear(8, 8), Scaled(8, 8).bfloat16())
    with packed_linears(model):
        assert ["forward" in vars(m) for m in model] == [True, False, False]
        x = torch.randn(3, 8).bfloat16().requires_grad_()
        model[0](x).sum().backward()  # grad mode: F.linear, so gradients flow
        assert x.grad is not None and model[0].weight.grad is not None
    with packed_linears(model, enabled=False):
        assert not any("forward" in vars(m) for m in model)


def test_packed_weight_follows_in_place_weight_changes():
    torch.manual_seed(1)
    layer = torch.nn.Linear(16, 24).bfloat16()
    x = torch.randn(5, 16).bfloat16()
    with torch.inference_mode(), packed_linears(layer):
        before = layer(x)
    with torch.no_grad():
        layer.weight.mul_(-2.0)  # e.g. an optimizer step on a bf16 model
    with torch.inference_mode(), packed_linears(layer):
        after = layer(x)
    assert torch.equal(after, torch.nn.functional.linear(x, layer.weight, layer.bias))
    assert not torch.equal(after, before)


@pytest.mark.parametrize("attention", ["model", "grouped"])
def test_packed_sampler_draws_the_same_samples_and_logprobs(lm, tokenizer, monkeypatch, attention):
    """Tolerance: none. The packed path gives identical tokens and identical float log-probs."""
    prompts = ["hello how are you", "thanks", "what is the time"]
    config = SamplingConfig(max_new_tokens=12, batch_size=5, dtype="bf16", attention=attention)
    packed = PolicySampler(lm, tokenizer, "tiny", config).generations(prompts, 4)
    monkeypatch.setattr(sampler_module, "packed_linears", functools.partial(packed_linears, enabled=False))
    plain = PolicySampler(lm, tokenizer, "tiny", config).generations(prompts, 4)
    assert [[g.token_ids for g in row] for row in packed] == [[g.token_ids for g in row] for row in plain]
    assert [[g.logprobs for g in row] for row in packed] == [[g.logprobs for g in row] for row in plain]
    assert any(g.finished for row in packed for g in row) or all(len(g.token_ids) == 12 for row in packed for g in row)


def test_packed_bf16_logprobs_equal_a_separate_bf16_forward_pass(lm, tokenizer):
    """The returned log-probs are those of the bf16 model the samples were drawn from (a full forward
    of prompt + response, unpacked), up to bf16 differences between incremental and full forwards."""
    prompt = "hello how are you"
    sampler = PolicySampler(lm, tokenizer, "tiny", SamplingConfig(max_new_tokens=10, dtype="bf16"))
    gens = sampler.generations([prompt], 6)[0]
    model16 = LlamaForCausalLM(lm.config).eval()
    model16.load_state_dict(lm.state_dict())
    model16 = model16.bfloat16()
    start = len(sampler.encode_prompt(prompt))
    diffs = []
    for g in gens:
        ids = sampler.encode_prompt(prompt) + list(g.token_ids) + ([g.stop_id] if g.finished else [])
        with torch.no_grad():
            logp = model16(torch.tensor([ids])).logits[0].float().log_softmax(-1)  # [T, V]
        ref = torch.stack([logp[start - 1 + t, ids[start + t]] for t in range(len(ids) - start)])
        diffs.append((torch.tensor(g.logprobs) - ref).abs())
    diffs = torch.cat(diffs)
    assert diffs.mean() < 0.05 and diffs.max() < 0.5


def test_decoding_passes_the_kv_cache_without_the_deprecated_argument(lm, tokenizer, recwarn):
    """transformers 5.2x deprecates ``past_key_values`` (removal in 5.40): the sampler uses ``cache``."""
    PolicySampler(lm, tokenizer, "tiny", SamplingConfig(max_new_tokens=4, dtype="fp32")).generations(["hello"], 2)
    assert not [w for w in recwarn if "past_key_values" in str(w.message)]
