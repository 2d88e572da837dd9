"""The tiny best-of-n scenario of the scenario, stage and crash tests, built in one place.

A tiny random Llama policy, the tiny BERT of conftest as the proxies' backbone and VADER as the
gold judge. :func:`tiny_scenario_mapping` is the base scenario; each test changes only what it is
about, as ``section={...}`` (a whole section) or ``section__key=value`` (one field).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch


def save_tiny_causal_lm(directory: Path, tokenizer_dir: Path, hidden_size: int = 16, intermediate_size: int = 32,
                        max_position_embeddings: int = 64) -> Path:
    """A 1-layer Llama with random weights (seed 0) and the tiny word tokenizer (eos ``</s>``), saved to directory."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.eos_token = "</s>"
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=2, intermediate_size=intermediate_size,
                      max_position_embeddings=max_position_embeddings, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(directory)
    tok.save_pretrained(directory)
    return Path(directory)


def tiny_scenario_mapping(policy: str | Path, backbone: str | Path, prompts: str | Path, **changes: Any) -> dict[str, Any]:
    """The tiny scenario as a mapping (``prompts``: the prompt file), with ``changes`` applied."""
    data: dict[str, Any] = {
        "name": "tiny", "policy": str(policy), "gold": "vader", "prompts": {"source": str(prompts)},
        "sampling": {"max_new_tokens": 4, "batch_size": 16},
        "preferences": {"prompts": 6, "samples_per_prompt": 3, "validation_fraction": 0.34},
        "model": {"backbone": str(backbone), "lora_r": 2, "max_length": 20},
        "training": {"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-3},
        "proxies": [{"name": "map", "method": "map"}],
        "bon": {"prompts": 3, "n_samples": 4, "n_boot": 20, "rewards": ["mean"]},
    }
    for dotted, value in changes.items():
        section, _, key = dotted.partition("__")
        if key:
            data[section][key] = value
        else:
            data[section] = value
    return data


def write_tiny_scenario(tmp_path: Path, policy: str | Path, backbone: str | Path, n_prompts: int = 10,
                        prompt: str = "what do you think of w{i}", file_name: str = "scenario.yaml", **changes: Any) -> Path:
    """TMP/prompts.txt (``n_prompts`` lines of ``prompt``) and the scenario file beside it; returns the scenario's path."""
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(prompt.format(i=i) for i in range(n_prompts)) + "\n")
    path = tmp_path / file_name
    path.write_text(json.dumps(tiny_scenario_mapping(policy, backbone, prompts, **changes)))
    return path


def tiny_scenario(tmp_path: Path, lm_dir: str | Path, bert_dir: str | Path, **changes: Any):
    """The tiny scenario written to TMP/scenario.yaml and loaded (a ScenarioConfig)."""
    from bayesrm.scenarios.config import load_scenario

    return load_scenario(str(write_tiny_scenario(tmp_path, lm_dir, bert_dir, **changes)))
