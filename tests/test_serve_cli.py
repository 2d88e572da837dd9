"""`bayesrm serve` as a real process: startup on a free port, kill -9 and SIGTERM, state restored on restart."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from test_serve import model_dir  # noqa: F401  (fixture: a tiny saved head ensemble)


def start(model, state_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    cmd = [
        sys.executable, "-m", "bayesrm.cli.main", "serve", "--model", str(model), "--reward", "up:beta2=0.5",
        "--port", "0", "--chat-template", "none", "--state-dir", str(state_dir), "--save-interval-s", "0",
    ]
    handle = log.open("w")
    proc = subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", log.read_text())
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            raise AssertionError(f"bayesrm serve exited with {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"bayesrm serve did not start:\n{log.read_text()}")


def test_serve_survives_kill_and_restores_state(model_dir, tmp_path):  # noqa: F811
    state = tmp_path / "state"
    proc, url = start(model_dir, state, tmp_path / "log1")
    try:
        first = httpx.post(url + "/score", json={"prompts": ["a", "b", "c"], "responses": ["it is good", "bad", "nice"]}, timeout=60).json()
    finally:
        proc.send_signal(signal.SIGKILL)  # no chance to save on exit: the state was saved before answering
        proc.wait(timeout=30)
    assert first["state"]["up_count"] == 3
    proc, url = start(model_dir, state, tmp_path / "log2")
    try:
        restored = httpx.get(url + "/health", timeout=30).json()["state"]
        second = httpx.post(url + "/score", json={"prompts": ["d", "e"], "responses": ["sorry", "thanks"]}, timeout=60).json()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert restored == first["state"]
    assert second["state"]["up_count"] == 5
    u_bar = (first["state"]["u_bar"] * 3 + sum(second["std"])) / 5  # the running mean continues exactly
    assert second["state"]["u_bar"] == pytest.approx(u_bar, abs=1e-7)
    assert code in (0, -signal.SIGTERM)  # uvicorn re-raises SIGTERM after its graceful shutdown
    saved = json.loads((state / "config.json").read_text())
    assert saved["bayesrm_kind"] == "serve_state" and saved["reward"] == "up:beta2=0.5" and saved["scored"] == 5


def test_a_state_saved_for_another_reward_is_refused(tmp_path):
    from bayesrm.models.checkpoint import CheckpointError
    from bayesrm.rewards import parse_reward
    from bayesrm.serve.config import ServeConfig
    from bayesrm.serve.server import build_state
    from bayesrm.serve.state import ServeState

    ServeState(parse_reward("std:k=2")).save(tmp_path / "state")
    with pytest.raises(CheckpointError, match="saved for reward 'std:k=2', this server uses 'up:beta2=1'"):
        build_state("up", ServeConfig(state_dir=str(tmp_path / "state")))
