"""Untrusted checkpoints: no code runs, no path escapes, corruption and edits are errors naming the file.

Each test here is the regression test of a defect of issue 16 (the fix it needs is named in its docstring).
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from bayesrm.models.checkpoint import CheckpointError, is_checkpoint_dir, save_checkpoint
from bayesrm.models.reward_model import RewardModel, RewardModelConfig
from bayesrm.registry import load_scorer

CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {
    "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")]),
}


def make(backbone_dir) -> RewardModel:
    return RewardModel.from_config(RewardModelConfig(backbone=str(backbone_dir), lora_r=2, max_length=16), seed=0)


def resign(directory: Path, mutate) -> None:
    """Rewrite a checkpoint's config.json through ``mutate(meta)`` with valid checksums, as a forger would."""
    meta = json.loads((directory / "config.json").read_text())
    tensors = load_file(str(directory / "model.safetensors"))
    mutate(meta)
    kind = meta.pop("bayesrm_kind")
    for key in ("format_version", "weights_sha256"):
        meta.pop(key, None)
    fingerprint = meta.pop("backbone_fingerprint", None)
    tmp = directory.with_name(directory.name + ".resign")
    save_checkpoint(tmp, kind, meta, tensors, fingerprint)
    for name in ("config.json", "model.safetensors"):
        os.replace(tmp / name, directory / name)
    shutil.rmtree(tmp)


@pytest.fixture(scope="module")
def saved(tiny_bert_dir, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ckpt") / "model"
    make(tiny_bert_dir).save_pretrained(d)
    return d


def copy_of(saved: Path, tmp_path: Path, name: str = "m") -> Path:
    return Path(shutil.copytree(saved, tmp_path / name))


# ---- code execution ---------------------------------------------------------------------------
EVIL_MODULE = '''
import pathlib
pathlib.Path({marker!r}).write_text("custom code ran")
from transformers import BertConfig, BertModel
class EvilConfig(BertConfig):
    model_type = "evil_bert"
class EvilModel(BertModel):
    config_class = EvilConfig
'''

LOAD_SCRIPT = '''
import sys
from bayesrm.registry import load_scorer
try:
    load_scorer(sys.argv[1], trust_remote_code=sys.argv[2] == "1")
    print("LOADED")
except Exception as err:
    print("ERROR", type(err).__name__, err)
'''


def test_checkpoint_cannot_turn_on_remote_code(saved, tiny_bert_dir, tmp_path):
    """Fix: trust_remote_code comes from the caller (load_scorer / --trust-remote-code), never from config.json."""
    evil = Path(shutil.copytree(tiny_bert_dir, tmp_path / "evil_backbone"))
    marker = tmp_path / "pwned"
    (evil / "evil_code.py").write_text(EVIL_MODULE.format(marker=str(marker)))
    cfg = json.loads((evil / "config.json").read_text())
    cfg.update(model_type="evil_bert", auto_map={"AutoConfig": "evil_code.EvilConfig", "AutoModel": "evil_code.EvilModel"})
    (evil / "config.json").write_text(json.dumps(cfg))
    ckpt = copy_of(saved, tmp_path)

    def point_at_evil(meta):
        meta["model"].update(backbone=str(evil), trust_remote_code=True)

    resign(ckpt, point_at_evil)
    env = CLEAN_ENV | {"HF_MODULES_CACHE": str(tmp_path / "modules"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

    def load(trust: bool) -> str:
        out = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(ckpt), "1" if trust else "0"],
                             capture_output=True, text=True, env=env, timeout=300)
        return out.stdout + out.stderr

    result = load(trust=False)
    assert not marker.exists(), result
    assert "ERROR" in result and "trust_remote_code" in result
    # the same checkpoint with the caller's consent does run the backbone's code (so the check above can fail)
    load(trust=True)
    assert marker.read_text() == "custom code ran"


def test_cli_score_has_a_trust_flag_default_off():
    from bayesrm.cli.main import build_parser

    parser = build_parser()
    args = parser.parse_args(["score", "--model", "m", "--input", "x.jsonl"])
    assert args.trust_remote_code is False and args.allow_external_paths is False
    args = parser.parse_args(["score", "--model", "m", "--input", "x.jsonl", "--trust-remote-code"])
    assert args.trust_remote_code is True


# ---- paths out of the checkpoint ----------------------------------------------------------------
@pytest.fixture(scope="module")
def posterior(tiny_bert_dir, tmp_path_factory) -> Path:
    from bayesrm.data.schema import PreferencePair
    from bayesrm.uncertainty.laplace import LaplaceLoRA

    pairs = [PreferencePair(f"q w{i}", f"good w{i}", f"bad w{i}") for i in range(8)]
    la = LaplaceLoRA(make(tiny_bert_dir), low_rank=4).fit(pairs, batch_size=8)
    d = tmp_path_factory.mktemp("post") / "posterior"
    la.save_pretrained(d)
    return d


@pytest.mark.parametrize("style", ["dotdot", "absolute", "symlink"])
def test_sub_checkpoint_paths_stay_inside(posterior, tmp_path, style):
    """Fix: confined_path() on every path read from a checkpoint, unless allow_external_paths=True."""
    post = Path(shutil.copytree(posterior, tmp_path / "runs" / "post"))
    outside = tmp_path / "m1" / "model"
    outside.parent.mkdir()
    shutil.move(str(post / "reward_model"), outside)
    if style == "symlink":
        (post / "reward_model").symlink_to(outside, target_is_directory=True)
    else:
        target = "../../m1/model" if style == "dotdot" else str(outside)
        resign(post, lambda meta: meta.update(reward_model=target))
    with pytest.raises(CheckpointError, match=r"config.json: field 'reward_model'.*outside the checkpoint"):
        load_scorer(post)
    assert load_scorer(post, allow_external_paths=True).n_data == 8


def test_config_and_weights_may_not_be_symlinks_out(saved, tmp_path):
    ckpt = copy_of(saved, tmp_path)
    elsewhere = tmp_path / "elsewhere.safetensors"
    shutil.move(str(ckpt / "model.safetensors"), elsewhere)
    (ckpt / "model.safetensors").symlink_to(elsewhere)
    with pytest.raises(CheckpointError, match="outside the checkpoint"):
        load_scorer(ckpt)


# ---- integrity ----------------------------------------------------------------------------------
def test_bit_flip_and_truncation_are_detected(saved, tmp_path):
    """Fix: weights_sha256 in config.json, checked on load."""
    flipped = copy_of(saved, tmp_path, "flipped")
    raw = bytearray((flipped / "model.safetensors").read_bytes())
    raw[-3] ^= 0x04  # one bit of the last tensor's data: still a valid safetensors file
    (flipped / "model.safetensors").write_bytes(bytes(raw))
    load_file(str(flipped / "model.safetensors"))  # safetensors alone cannot tell
    with pytest.raises(CheckpointError, match=r"flipped/model.safetensors: SHA-256 does not match"):
        load_scorer(flipped)
    truncated = copy_of(saved, tmp_path, "truncated")
    (truncated / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"truncated/model.safetensors"):
        load_scorer(truncated)


def test_edited_config_is_detected(saved, tmp_path):
    """Fix: the config's SHA-256 in the safetensors header."""
    ckpt = copy_of(saved, tmp_path)
    meta = json.loads((ckpt / "config.json").read_text())
    meta["model"]["max_length"] = 99  # fits the weights, silently changes every score
    (ckpt / "config.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"m/config.json: edited after saving"):
        load_scorer(ckpt)


def test_non_finite_weights_are_refused(tiny_bert_dir, tmp_path):
    model = make(tiny_bert_dir)
    with torch.no_grad():
        model.head.weight[0, 3] = float("nan")
    model.save_pretrained(tmp_path / "nan")
    with pytest.raises(CheckpointError, match=r"nan/model.safetensors: tensor head.weight holds NaN"):
        load_scorer(tmp_path / "nan")


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda m: m.update(format_version="1"), r"field 'format_version' must be a positive integer"),
    (lambda m: m.update(bayesrm_kind=["reward_model"]), r"field 'bayesrm_kind' must be a string"),
    (lambda m: m.update(bayesrm_kind="rootkit"), r"unknown checkpoint kind 'rootkit'"),
    (lambda m: m["model"].update(lora_r="8"), r"model\.lora_r: expected int, got str \('8'\)"),
    (lambda m: m["model"].update(target_modules="query"), r"model\.target_modules: expected list\[str\] \| one of 'all-linear' \| null, got str"),
    (lambda m: m["model"].update(lora_ranks=8), r"model\.lora_ranks: unknown key \(did you mean 'lora_r'\?\)"),
    (lambda m: m.pop("model"), r"field 'model' missing"),
    (lambda m: m.update(backbone_fingerprint=[1]), r"field 'backbone_fingerprint' must be a dict"),
    (lambda m: m["backbone_fingerprint"].update(hidden_size=64), r"saved against a different backbone"),
])
def test_wrongly_typed_config_is_a_checkpoint_error(saved, tmp_path, mutate, message):
    """Fix: typed checks of config.json (read_meta, config_from_meta); before: TypeError / unhashable type."""
    ckpt = copy_of(saved, tmp_path)
    if "bayesrm_kind" in message or "format_version" in message:  # read before any checksum: plain edit
        meta = json.loads((ckpt / "config.json").read_text())
        mutate(meta)
        (ckpt / "config.json").write_text(json.dumps(meta))
    else:
        resign(ckpt, mutate)
    with pytest.raises(CheckpointError, match=r"m/config.json.*" + message):
        load_scorer(ckpt)


def test_unreadable_or_missing_config(saved, tmp_path):
    ckpt = copy_of(saved, tmp_path)
    (ckpt / "config.json").write_bytes(b'{"bayesrm_kind": "reward_model\xff\xfe"}')
    with pytest.raises(CheckpointError, match=r"m/config.json: not valid UTF-8"):
        load_scorer(ckpt)
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"m/config.json: missing"):
        load_scorer(ckpt)


# ---- pickles ------------------------------------------------------------------------------------
class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled"))


def test_pickle_files_are_never_loaded(saved, tiny_bert_dir, tmp_path):
    """A checkpoint or backbone holding only pickle weights is refused; the pickle is never opened."""
    marker = tmp_path / "unpickled"
    ckpt = copy_of(saved, tmp_path)
    (ckpt / "model.safetensors").unlink()
    for name in ("pytorch_model.bin", "model.pt", "model.pkl"):
        (ckpt / name).write_bytes(pickle.dumps(_Payload(marker)))
    with pytest.raises(CheckpointError, match=r"m/model.safetensors: missing"):
        load_scorer(ckpt)
    backbone = Path(shutil.copytree(tiny_bert_dir, tmp_path / "pickled_backbone"))
    tensors = load_file(str(backbone / "model.safetensors"))
    (backbone / "model.safetensors").unlink()
    with open(backbone / "pytorch_model.bin", "wb") as f:  # a real torch pickle, plus the payload
        pickle.dump({"payload": _Payload(marker), **tensors}, f)
    with pytest.raises((OSError, ValueError), match="safetensors"):
        RewardModel.from_config(RewardModelConfig(backbone=str(backbone), lora_r=2))
    assert not marker.exists()


# ---- what save_checkpoint may delete -----------------------------------------------------------
def test_save_never_deletes_user_directories(tiny_bert_dir, tmp_path):
    """Fix: the old checkpoint is moved to a fresh mkdtemp name; before, `<dir>.old` was rmtree'd."""
    model = make(tiny_bert_dir)
    user = tmp_path / "model.old"
    user.mkdir()
    (user / "thesis.tex").write_text("precious")
    model.save_pretrained(tmp_path / "model")
    model.save_pretrained(tmp_path / "model")  # replaces the first save
    assert (user / "thesis.tex").read_text() == "precious"
    assert is_checkpoint_dir(tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.old"]  # no leftovers
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    with pytest.raises(CheckpointError, match="not a bayesrm checkpoint; refusing"):
        model.save_pretrained(notes)
    assert (notes / "todo.txt").read_text() == "mine"


# ---- the source itself ---------------------------------------------------------------------------
ALLOWED = {
    ("cli/options.py", "eval"): "evaluates the package's own dataclass annotations (strings from `from __future__ import annotations`), never user text",
}
"""(file under src/bayesrm, finding) -> why it is safe. Every finding of the scan must be listed here."""

UNPICKLING_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def risky_nodes(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, finding) for torch.load / unpickling imports / eval / exec / trust_remote_code=True and weights_only=False."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                if name.split(".")[0] in UNPICKLING_MODULES:
                    found.append((node.lineno, f"import {name}"))
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
            if name == "load" and owner in {"torch", "pickle", "dill", "joblib"}:
                found.append((node.lineno, f"{owner}.load"))
            if name in {"eval", "exec"} and isinstance(func, ast.Name):
                found.append((node.lineno, name))
            for kw in node.keywords:
                if isinstance(kw.value, ast.Constant) and (kw.arg, kw.value.value) in {("trust_remote_code", True), ("weights_only", False)}:
                    found.append((node.lineno, f"{kw.arg}={kw.value.value}"))
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args.args + node.args.kwonlyargs
            defaults = [None] * (len(node.args.args) - len(node.args.defaults)) + node.args.defaults + node.args.kw_defaults
            for arg, default in zip(args, defaults):
                if arg.arg == "trust_remote_code" and isinstance(default, ast.Constant) and default.value is not False:
                    found.append((node.lineno, "trust_remote_code default not False"))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "trust_remote_code":
            if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                found.append((node.lineno, "trust_remote_code field default not False"))
    return found


def test_source_has_no_unpickling_or_remote_code_defaults():
    root = Path(__file__).resolve().parents[1] / "src" / "bayesrm"
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = str(path.relative_to(root))
        for lineno, what in risky_nodes(ast.parse(path.read_text())):
            if (rel, what) not in ALLOWED:
                found.append(f"{rel}:{lineno}: {what}")
    assert not found, "risky code in src/ (fix it, or add it to ALLOWED with a reason):\n" + "\n".join(found)
    assert all((root / f).exists() for f, _ in ALLOWED), "stale ALLOWED entry"


def test_source_scan_catches_what_it_should():
    """The scan finds the forms it guards against (so the test above can fail), and not mentions in text."""
    bad = textwrap.dedent("""
        import pickle
        from dill import loads
        state = torch.load(path)
        AutoModel.from_pretrained(p, trust_remote_code=True)
        torch.load(f, weights_only=False)
        def load(d, trust_remote_code=True): ...
        class C:
            trust_remote_code: bool = True
        eval(user_text)
    """)
    assert len(risky_nodes(ast.parse(bad))) == 9
    fine = 'def f(trust_remote_code: bool = False):\n    """never pickle, never torch.load"""  # trust_remote_code=True\n    model.eval()\n'
    assert risky_nodes(ast.parse(fine)) == []
