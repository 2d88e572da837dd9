"""Policy sampling: the sampling rule, the KV-cached loop against transformers, seeding, the on-disk cache."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from bayesrm.generation import PolicySampler, SamplingConfig, generate_rows, sample_next
from bayesrm.generation.sampler import sample_seed

PROMPTS = ["hello how are you", "what do you think of the cat", "thanks", "why is the dog sad"]


def _tiny_lm(tokenizer, seed: int = 0) -> LlamaForCausalLM:
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=256,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def lm(tokenizer):
    return _tiny_lm(tokenizer)


def _counting(sampler: PolicySampler) -> list[int]:
    """Wrap the backend so each call's number of rows is recorded."""
    calls: list[int] = []
    inner = sampler.backend.generate

    def generate(prompt_ids, rows, seeds, config):
        calls.append(len(rows))
        return inner(prompt_ids, rows, seeds, config)

    sampler.backend.generate = generate  # type: ignore[method-assign]
    return calls


# ---- the sampling rule ----------------------------------------------------------------------

def test_sample_next_inverse_cdf_reproduces_softmax_exactly():
    logits = torch.tensor([[1.0, -0.5, 2.0, 0.0, 0.3, -2.0]])
    n = 6000
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n  # stratified uniforms: counts = n p +- 1
    for temperature in (1.0, 0.5):
        tokens = sample_next(logits.expand(n, -1), u, temperature=temperature)
        counts = torch.bincount(tokens, minlength=6).double()
        probs = torch.softmax(logits[0].double() / temperature, -1)
        assert (counts - n * probs).abs().max() <= 1.0


@pytest.mark.parametrize("top_k,top_p", [(2, 1.0), (0, 0.7), (3, 0.5), (0, 0.05)])
def test_sample_next_top_k_top_p_against_brute_force(top_k, top_p):
    logits = torch.tensor([[0.2, 1.5, -1.0, 1.1, 0.9, -0.3, 0.0]])
    probs = torch.softmax(logits[0].double(), -1).tolist()
    ranked = sorted(range(7), key=lambda i: -probs[i])
    kept = ranked[:top_k] if top_k else ranked
    if top_p < 1:  # smallest prefix of the ranked tokens whose mass reaches top_p
        mass, nucleus = 0.0, []
        for i in kept:
            nucleus.append(i)
            mass += probs[i]
            if mass >= top_p:
                break
        kept = nucleus
    ref = torch.zeros(7, dtype=torch.float64)
    ref[kept] = torch.tensor([probs[i] for i in kept], dtype=torch.float64)
    ref /= ref.sum()
    n = 5000
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    counts = torch.bincount(sample_next(logits.expand(n, -1), u, top_k=top_k, top_p=top_p), minlength=7).double()
    assert (counts - n * ref).abs().max() <= 1.0


def test_sample_next_greedy_at_zero_temperature():
    logits = torch.randn(5, 11)
    assert torch.equal(sample_next(logits, torch.rand(5), temperature=0), logits.argmax(-1))


# ---- the decoding loop ------------------------------------------------------------------------

def _hf_greedy(lm, ids: list[int], max_new: int, eos: int) -> list[int]:
    out = lm.generate(torch.tensor([ids]), max_new_tokens=max_new, do_sample=False, eos_token_id=eos, pad_token_id=0)
    return out[0, len(ids):].tolist()


def test_greedy_rows_match_transformers_generate_with_prefix_sharing_and_early_stop(lm):
    prompts = [[7, 8, 9, 10, 11], [12, 13], [14, 15, 16, 17, 18, 19, 20, 21]]
    free = _hf_greedy(lm, prompts[0], 12, eos=-1)
    eos = free[3]  # make prompt 0 stop after 3 tokens; the other rows must carry on unaffected
    rows = [0, 1, 2, 0, 2, 1]
    gens = generate_rows(lm, prompts, rows, seeds=list(range(6)), eos_ids=[eos], pad_id=0, max_new_tokens=12, temperature=0)
    for r, g in zip(rows, gens):
        ref = _hf_greedy(lm, prompts[r], 12, eos)
        finished = ref[-1] == eos
        assert list(g.token_ids) == (ref[:-1] if finished else ref)
        assert g.finished == finished
    assert gens[0].finished and len(gens[0].token_ids) == free.index(eos)


def test_sample_does_not_depend_on_batch_composition(lm):
    prompt_ids = [[7, 8, 9], [20, 21, 22, 23, 24, 25]]
    alone = generate_rows(lm, prompt_ids[:1], [0, 0], [11, 12], [6], 0, 15)
    mixed = generate_rows(lm, prompt_ids[::-1], [1, 0, 0, 1, 0], [11, 99, 98, 12, 97], [6], 0, 15)
    assert [alone[0], alone[1]] == [mixed[0], mixed[3]]
    assert alone[0] != alone[1]


# ---- the sampler --------------------------------------------------------------------------------

def test_sampler_shapes_determinism_and_seeds(lm, tokenizer):
    cfg = SamplingConfig(max_new_tokens=6, batch_size=5, seed=3)
    a = PolicySampler(lm, tokenizer, "tiny", cfg)
    out = a.sample(PROMPTS + [PROMPTS[0]], 3, progress=False)
    assert len(out) == 5 and all(len(r) == 3 and all(isinstance(t, str) for t in r) for r in out)
    assert out[4] == out[0]  # identical prompts share their samples
    assert len(set(out[0])) > 1  # samples of one prompt differ
    b = PolicySampler(lm, tokenizer, "tiny", SamplingConfig(max_new_tokens=6, batch_size=64, seed=3))
    assert b.sample(PROMPTS, 3, progress=False) == out[:4]  # batch size does not matter
    c = PolicySampler(lm, tokenizer, "tiny", SamplingConfig(max_new_tokens=6, seed=4))
    assert c.sample(PROMPTS, 3, progress=False) != out[:4]


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_sampler_records_equal_direct_generation(lm, tokenizer, dtype):
    cfg = SamplingConfig(max_new_tokens=30, batch_size=8, seed=1, dtype=dtype)
    sampler = PolicySampler(lm, tokenizer, "tiny", cfg)
    assert sampler.dtype == dtype and next(lm.parameters()).dtype == torch.float32  # the caller's model is not cast
    reference = lm if dtype == "fp32" else copy.deepcopy(lm).to(torch.bfloat16)
    records = sampler.sample_records(PROMPTS, 4, progress=False)
    for prompt, row in zip(PROMPTS, records):
        ids = tokenizer(prompt)["input_ids"]
        seeds = [sample_seed(1, prompt, i) for i in range(4)]
        gens = generate_rows(reference, [ids], [0] * 4, seeds, [tokenizer.eos_token_id], tokenizer.pad_token_id, 30)
        for rec, g in zip(row, gens):
            assert rec.num_tokens == len(g.token_ids) <= 30
            assert rec.finished == g.finished
            assert rec.text == tokenizer.decode(list(g.token_ids), skip_special_tokens=True)
    assert sampler.stats.samples == 16
    assert sampler.stats.tokens == sum(r.num_tokens + r.finished for row in records for r in row)


def test_cache_hit_generates_nothing_and_new_weights_miss(lm, tokenizer, tmp_path):
    cfg = SamplingConfig(max_new_tokens=5, batch_size=4)
    first = PolicySampler(lm, tokenizer, "tiny", cfg, cache_dir=tmp_path)
    out = first.sample(PROMPTS, 3, progress=False)
    second = PolicySampler(lm, tokenizer, "tiny", cfg, cache_dir=tmp_path)
    calls = _counting(second)
    assert second.sample(PROMPTS, 3, progress=False) == out
    assert calls == []
    other = _tiny_lm(tokenizer, seed=1)  # same id, different weights: its own cache
    third = PolicySampler(other, tokenizer, "tiny", cfg, cache_dir=tmp_path)
    calls = _counting(third)
    third.sample(PROMPTS, 3, progress=False)
    assert sum(calls) == 12


def test_resume_after_interruption_generates_only_the_rest(lm, tokenizer, tmp_path):
    cfg = SamplingConfig(max_new_tokens=5, batch_size=4)
    reference = PolicySampler(lm, tokenizer, "tiny", cfg, cache_dir=tmp_path / "ref").sample(PROMPTS[:3], 4, progress=False)

    crashing = PolicySampler(lm, tokenizer, "tiny", cfg, cache_dir=tmp_path / "run")
    inner, calls = crashing.backend.generate, []

    def crash_after_first(*args):
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return inner(*args)

    crashing.backend.generate = crash_after_first  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        crashing.sample(PROMPTS[:3], 4, progress=False)

    resumed = PolicySampler(lm, tokenizer, "tiny", cfg, cache_dir=tmp_path / "run")
    calls = _counting(resumed)
    assert resumed.sample(PROMPTS[:3], 4, progress=False) == reference
    assert sum(calls) == 12 - 4


def test_larger_n_extends_the_cache(lm, tokenizer, tmp_path):
    cfg = SamplingConfig(max_new_tokens=5, batch_size=16)
    small = PolicySampler(lm, tokenizer, "tiny", cfg, cache_dir=tmp_path).sample(PROMPTS, 2, progress=False)
    sampler = PolicySampler(lm, tokenizer, "tiny", cfg, cache_dir=tmp_path)
    calls = _counting(sampler)
    big = sampler.sample(PROMPTS, 5, progress=False)
    assert sum(calls) == len(PROMPTS) * 3
    assert [row[:2] for row in big] == small


def _cache_file(root: Path) -> Path:
    (path,) = root.glob("*/*.jsonl")
    return path


def test_cut_short_last_line_is_dropped_and_regenerated(lm, tokenizer, tmp_path):
    cfg = SamplingConfig(max_new_tokens=5, batch_size=16)
    out = PolicySampler(lm, tokenizer, "tiny", cfg, cache_dir=tmp_path).sample(PROMPTS[:2], 2, progress=False)
    path = _cache_file(tmp_path)
    text = path.read_text()
    path.write_text(text[: len(text) - 7])  # a crash mid-write
    sampler = PolicySampler(lm, tokenizer, "tiny", cfg, cache_dir=tmp_path)
    calls = _counting(sampler)
    assert sampler.sample(PROMPTS[:2], 2, progress=False) == out
    assert calls == [1]
    assert len(path.read_text().splitlines()) == 4
    assert all(json.loads(line) for line in path.read_text().splitlines())


@pytest.mark.parametrize("bad_line", [
    b'{"prompt": "x", "index": 0}\n',                      # a missing field
    b'{"prompt": "x", "ind\xff\xfe": 0, "text": 1}\n',    # invalid UTF-8 bytes
    b'{"prompt": "hello how are you", "index": 0, "text": "a", "num_tokens": 1, "finished": "no"}\n',  # wrong type
    b'{"prompt": "hello how are\n',                          # a torn line with whole lines after it
])
def test_corrupt_middle_cache_line_is_dropped_and_only_its_sample_regenerated(lm, tokenizer, tmp_path, caplog, bad_line):
    cfg = SamplingConfig(max_new_tokens=5, batch_size=16)
    out = PolicySampler(lm, tokenizer, "tiny", cfg, cache_dir=tmp_path).sample(PROMPTS[:2], 2, progress=False)
    path = _cache_file(tmp_path)
    lines = path.read_bytes().splitlines(keepends=True)
    assert len(lines) == 4
    lines[1] = bad_line  # the second sample is lost; the three around it are good
    path.write_bytes(b"".join(lines))
    with caplog.at_level("WARNING", logger="bayesrm.generation.cache"):
        sampler = PolicySampler(lm, tokenizer, "tiny", cfg, cache_dir=tmp_path)
    assert [n for n, _ in sampler.cache.dropped] == [2] and len(sampler.cache) == 3
    assert f"{path}: dropped 1 corrupt cache line(s): line 2" in caplog.text
    calls = _counting(sampler)
    assert sampler.sample(PROMPTS[:2], 2, progress=False) == out
    assert calls == [1]  # only the lost sample was generated again
    assert bad_line not in path.read_bytes() and len(path.read_bytes().splitlines()) == 4  # compacted by that write
    again = PolicySampler(lm, tokenizer, "tiny", cfg, cache_dir=tmp_path)
    assert again.cache.dropped == [] and len(again.cache) == 4


def test_bad_sampling_config():
    with pytest.raises(ValueError, match="top_p"):
        SamplingConfig(top_p=0)
    with pytest.raises(ValueError, match="temperature"):
        SamplingConfig(temperature=-1)


# ---- the real embedded policy ---------------------------------------------------------------------

@pytest.mark.integration
def test_smollm2_samples_two_short_responses(tmp_path):
    from bayesrm.models.policy import load_policy

    model, tok = load_policy("smollm2")
    assert tok.padding_side == "left" and tok.pad_token_id is not None
    sampler = PolicySampler(model, tok, "smollm2", SamplingConfig(max_new_tokens=8), cache_dir=tmp_path)
    records = sampler.sample_records(["How was your weekend?"], 2, progress=False)[0]
    assert len(records) == 2 and all(r.text.strip() and 0 < r.num_tokens <= 8 for r in records)
    assert "<|im" not in records[0].text


def test_cache_keeps_texts_with_unicode_line_separators(tmp_path):
    """Sampled text may contain U+2028 / U+0085 (written unescaped); only '\\n' ends a cache line."""
    from bayesrm.generation.cache import Sample, SampleCache

    texts = ["a\u2028b", "c\x85d", "e\u2029f\x1cg"]
    cache = SampleCache(tmp_path / "c.jsonl")
    cache.add([(("p", i), Sample(text=t, num_tokens=3, finished=True)) for i, t in enumerate(texts)])
    reloaded = SampleCache(tmp_path / "c.jsonl")
    assert [reloaded[("p", i)].text for i in range(3)] == texts


def test_two_level_cdf_matches_the_float64_cdf_on_a_large_peaked_vocabulary():
    """The fast unfiltered path (block sums, then one block) draws the token the full float64 CDF
    draws, including across block edges, with a vocabulary that is not a multiple of the block."""
    from bayesrm.generation.decoding import _sample_filtered, sample_with_logprobs

    torch.manual_seed(0)
    logits = torch.randn(1, 1000) * 8  # most tokens underflow to probability ~0
    n = 3000
    u = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    wide = logits.expand(n, -1)
    for temperature in (1.0, 1.7):
        tokens, logprobs = sample_with_logprobs(wide, u, temperature)
        assert torch.equal(tokens, _sample_filtered(wide, u, temperature, 0, 1.0))
        ref = torch.log_softmax(logits[0].double() / temperature, -1)[tokens]
        assert torch.allclose(logprobs.double(), ref, atol=1e-5)
        assert len(set((tokens // 256).tolist())) > 1  # the draws span several blocks
