"""Two-process CPU training (gloo) through `accelerate launch`: both ranks must end with identical weights."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors import safe_open
from safetensors.torch import load_file

SCRIPT = Path(__file__).parent / "scripts" / "ddp_train.py"


def test_two_process_accelerate_training_ends_identical(tiny_bert_dir, tmp_path):
    launcher = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    if launcher is None:
        pytest.skip("accelerate CLI not installed beside this Python")
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29533",
           str(SCRIPT), str(tiny_bert_dir), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = [tmp_path / "rank0.safetensors", tmp_path / "rank1.safetensors"]
    assert all(f.exists() for f in files), "each rank writes its weights"
    with safe_open(str(files[0]), "pt") as f:
        assert f.metadata()["world_size"] == "2", "the Trainer must see both processes"
        # DDP (and its Reducer) freed by train_reward_model, not left to interpreter teardown
        assert f.metadata()["wrapper_after_training"] == "RewardModel"
    a, b = load_file(str(files[0])), load_file(str(files[1]))
    assert a.keys() == b.keys() and any("lora_B" in k for k in a)
    for key in a:
        assert (a[key] - b[key]).abs().max() == 0, key
    # training really changed the LoRA weights (B starts at zero)
    assert any(a[k].abs().sum() > 0 for k in a if "lora_B" in k)
