"""Shared fixtures: tiny randomly initialised backbones built from configs (never a Hub download)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _word_vocab() -> list[str]:
    words = (
        "the a an is are was be good bad great terrible happy sad love hate yes no please thanks "
        "i you he she it we they what why how when where help sorry sure can not do does okay "
        "human assistant hello world cat dog food kill steal harm safe kind rude nice answer question"
    ).split()
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>"] + words + [f"w{i}" for i in range(40)]


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory) -> Path:
    """A word-level BERT tokenizer saved to disk (serves both tiny backbones)."""
    d = tmp_path_factory.mktemp("tok")
    make_tiny_tokenizer().save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    """The tiny word tokenizer as the sampling tests use it (eos "</s>", left padding); test modules that need
    another set-up define their own `tokenizer`."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    tok.eos_token = "</s>"
    tok.padding_side = "left"
    return tok


def make_tiny_tokenizer():
    """A word-level BERT tokenizer over ~100 words (lower-cased; unknown words map to [UNK])."""
    from transformers import BertTokenizer

    return BertTokenizer(vocab={w: i for i, w in enumerate(_word_vocab())}, do_lower_case=True)


def _save_tiny(kind: str, out: Path, tok_dir: Path) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertModel, LlamaConfig, LlamaModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tok_dir)
    if kind == "bert":
        cfg = BertConfig(
            vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=128,
        )
        model = BertModel(cfg, add_pooling_layer=False)
    else:
        cfg = LlamaConfig(
            vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=2, intermediate_size=64, max_position_embeddings=128,
            bos_token_id=tok.convert_tokens_to_ids("<s>"), eos_token_id=tok.convert_tokens_to_ids("</s>"),
            pad_token_id=tok.pad_token_id,
        )
        cfg.architectures = ["LlamaForCausalLM"]
        model = LlamaModel(cfg)
        tok.bos_token, tok.eos_token = "<s>", "</s>"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A 2-layer BERT, hidden size 32, random weights, saved as a local model directory."""
    return _save_tiny("bert", tmp_path_factory.mktemp("tiny_bert"), tiny_tokenizer_dir)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_tokenizer_dir) -> Path:
    """A 2-layer Llama, hidden size 32, random weights, saved as a local model directory."""
    return _save_tiny("llama", tmp_path_factory.mktemp("tiny_llama"), tiny_tokenizer_dir)


@pytest.fixture
def toy_pairs() -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected) triples with a learnable rule: 'good' words beat 'bad' ones."""
    pos = ["good", "great", "happy", "love", "nice", "kind", "safe", "thanks"]
    neg = ["bad", "terrible", "sad", "hate", "rude", "harm", "kill", "steal"]
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(48):
        a = pos[int(torch.randint(len(pos), (1,), generator=g))]
        b = neg[int(torch.randint(len(neg), (1,), generator=g))]
        out.append((f"what do you think w{i % 40}", f"it is {a} w{(i * 7) % 40}", f"it is {b} w{(i * 3) % 40}"))
    return out
