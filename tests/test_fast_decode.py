"""The per-step speed-ups of the sampler: grouped decode attention, row-chunked sampling, the reused
bf16 copy. Each is checked against the reference path it replaces on tiny random models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import bayesrm.generation.decoding as decoding
from bayesrm.generation import PolicySampler, SamplingConfig, generate_rows, sample_with_logprobs
from bayesrm.generation.attention import NAME, attention_for_sampling
from bayesrm.generation.decoding import row_uniforms
from bayesrm.generation.precision import model_in_dtype

PROMPT_IDS = [[7, 8, 9], [20, 21, 22, 23, 24, 25], [30]]  # different lengths: left padding in the batch


@pytest.fixture(scope="module")
def gqa_lm(tokenizer):
    """A tiny Llama with grouped-query attention (4 query heads share each of 2 key/value heads)
    and a scaled-up LM head (peaked next-token distributions, so rounding differences would show)."""
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=64, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=2, intermediate_size=128, max_position_embeddings=256,
        eos_token_id=6, pad_token_id=tokenizer.pad_token_id, attn_implementation="sdpa",
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(5.0)
    return model


def _decode_logits(model, steps: int = 6) -> list[torch.Tensor]:
    """Logits [U, V] of a prefill and ``steps`` greedy decode steps of PROMPT_IDS (left-padded)."""
    ids, mask = decoding._left_pad(PROMPT_IDS, 0, torch.device("cpu"))
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    with torch.inference_mode():
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True)
        cache, pos, logits = decoding._output_cache(out), positions[:, -1], [out.logits[:, -1]]
        for _ in range(steps):
            mask = torch.cat([mask, mask.new_ones(len(PROMPT_IDS), 1)], -1)
            pos = pos + 1
            out = model(input_ids=logits[-1].argmax(-1, keepdim=True), attention_mask=mask,
                        position_ids=pos[:, None], use_cache=True, **{decoding._cache_argument(model): cache})
            cache = decoding._output_cache(out)
            logits.append(out.logits[:, -1])
    return logits


def test_grouped_decode_attention_matches_sdpa_and_restores_the_model(gqa_lm):
    reference = _decode_logits(gqa_lm)
    with attention_for_sampling(gqa_lm, "grouped") as model:
        assert model.config._attn_implementation == NAME
        grouped = _decode_logits(model)
    assert gqa_lm.config._attn_implementation == "sdpa"
    for ref, got in zip(reference, grouped):  # fp32: the same arithmetic up to the order of operations
        assert torch.allclose(ref, got, atol=1e-5, rtol=1e-5)
    with attention_for_sampling(gqa_lm, "model") as model:
        assert model.config._attn_implementation == "sdpa"
    with pytest.raises(ValueError, match="attention must be one of"):
        with attention_for_sampling(gqa_lm, "flash"):
            pass
    with pytest.raises(ValueError, match="attention"):
        SamplingConfig(attention="flash")


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_grouped_attention_samples_agree_with_the_models_attention(gqa_lm, tokenizer, dtype):
    """Stated tolerance, from the same seeds: fp32 -> the same tokens and log-probs within 1e-4;
    bf16 -> >= 75% of the 48 samples (~11 tokens each) identical (39 seen: bf16 matmuls rounded in
    another order flip a near-tie in ~2% of tokens, and a sample differs from there on; a wrong
    attention would change nearly all) and the log-probs of identical samples within 0.05 nats."""
    def sample(attention):
        sampler = PolicySampler(gqa_lm, tokenizer, "tiny", SamplingConfig(max_new_tokens=12, dtype=dtype, attention=attention))
        return [g for row in sampler.generations(["hello how are you", "thanks", "why is the dog sad"], 16) for g in row]

    ref, got = sample("model"), sample("grouped")
    same = [(a, b) for a, b in zip(ref, got) if a == b]
    assert len(same) == len(ref) if dtype == "fp32" else len(same) >= 0.75 * len(ref)
    tol = 1e-4 if dtype == "fp32" else 0.05
    for a, b in same:
        assert np.allclose(a.logprobs, b.logprobs, atol=tol)
    if dtype == "fp32":  # and equal the log-probs of one separate full forward pass
        for prompt, g in [("thanks", got[16]), ("why is the dog sad", got[40])]:
            ids = tokenizer(prompt)["input_ids"] + list(g.token_ids) + ([g.stop_id] if g.finished else [])
            n = len(tokenizer(prompt)["input_ids"])
            with torch.no_grad():
                logp = gqa_lm(torch.tensor([ids])).logits[0].double().log_softmax(-1)  # [T, V]
            ref = [logp[n - 1 + t, ids[n + t]].item() for t in range(len(ids) - n)]
            assert np.allclose(g.logprobs, ref, atol=1e-4)


def test_row_chunked_sampling_equals_sampling_all_rows_at_once(monkeypatch):
    torch.manual_seed(3)
    logits = torch.randn(75, 1000) * 4  # 75 rows: chunks of 32, 32 and 11
    u = torch.from_numpy(row_uniforms(np.arange(75, dtype=np.uint64) * 7919, 0))
    for kwargs in [{}, {"temperature": 0.7}, {"top_k": 50}, {"top_p": 0.9}, {"temperature": 0.0}]:
        chunked = sample_with_logprobs(logits, u, **kwargs)
        monkeypatch.setattr(decoding, "_ROW_CHUNK", 1 << 30)
        whole = sample_with_logprobs(logits, u, **kwargs)
        monkeypatch.undo()
        assert torch.equal(chunked[0], whole[0]) and torch.equal(chunked[1], whole[1])
        bf16 = sample_with_logprobs(logits.bfloat16(), u, **kwargs)  # bf16 logits are cast per chunk
        assert torch.equal(bf16[0], sample_with_logprobs(logits.bfloat16().float(), u, **kwargs)[0])


def test_cache_key_separates_the_attention_option(gqa_lm, tokenizer, tmp_path):
    prompts = ["hello how are you", "thanks"]
    for attention in ["model", "grouped", "grouped"]:
        sampler = PolicySampler(gqa_lm, tokenizer, "tiny", SamplingConfig(max_new_tokens=4, dtype="fp32", attention=attention),
                                cache_dir=tmp_path)
        sampler.sample(prompts, 2, progress=False)
    files = sorted(tmp_path.glob("*/*.json"))
    keys = sorted(str(json.loads(f.read_text()).get("attention")) for f in files)
    assert keys == ["None", "grouped"]  # "model" is left out of the key: caches from before the option stay valid
    assert sampler.stats.samples == 0  # the second grouped sampler read the first one's samples


def test_bf16_copy_is_reused_until_a_weight_changes(gqa_lm):
    model = LlamaForCausalLM(gqa_lm.config).eval()
    model.load_state_dict(gqa_lm.state_dict())
    first = model_in_dtype(model, "bf16")
    assert model_in_dtype(model, "bf16") is first
    assert model_in_dtype(model, "bf16", reuse=False) is not first
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight.add_(1.0)  # in place, as an optimizer step
    second = model_in_dtype(model, "bf16")
    assert second is not first
    assert torch.equal(second.model.layers[1].mlp.up_proj.weight, model.model.layers[1].mlp.up_proj.weight.bfloat16())
    model.load_state_dict(gqa_lm.state_dict())  # copy_ into the parameters
    third = model_in_dtype(model, "bf16")
    assert third is not second and torch.equal(third.lm_head.weight, gqa_lm.lm_head.weight.bfloat16())
    model.model.norm.weight = torch.nn.Parameter(torch.zeros(64))  # a replaced parameter
    assert model_in_dtype(model, "bf16") is not third


def test_bf16_copy_of_a_peft_model_is_never_reused(gqa_lm):
    from peft import LoraConfig, get_peft_model

    model = LlamaForCausalLM(gqa_lm.config).eval()
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    first = model_in_dtype(peft_model, "bf16")
    with peft_model.disable_adapter():
        assert model_in_dtype(peft_model, "bf16") is not first
