"""Helpers for the reward-server tests: a real uvicorn server on a free loopback port, in a thread."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chatml(messages: list[dict[str, str]], generation_prompt: bool = True) -> str:
    text = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return text + ("<|im_start|>assistant\n" if generation_prompt else "")


def write_chatml(directory: Path) -> Path:
    path = directory / "chatml.jinja"
    path.write_text(CHATML)
    return path


class CountingScorer:
    """Wraps a scorer and records each score() call's batch size (one call = one batched forward)."""

    def __init__(self, scorer) -> None:
        self.scorer, self.calls = scorer, []
        self._lock = threading.Lock()

    def score(self, prompts, responses, batch_size=32, progress=False):
        with self._lock:
            self.calls.append(len(responses))
        return self.scorer.score(prompts, responses, batch_size=batch_size)


@contextmanager
def serving(app) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1:<free port>; yields the base URL; stops it (lifespan shutdown) after."""
    import uvicorn

    from bayesrm.serve.server import bind

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
