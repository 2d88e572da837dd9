"""Build and run the reward server: load the scorer and reward, restore state, serve with uvicorn."""

from __future__ import annotations

import logging
import socket
import sys
from pathlib import Path
from typing import Any

from bayesrm.serve.config import ServeConfig
from bayesrm.serve.state import ServeState

logger = logging.getLogger(__name__)


def build_state(reward_spec: str, config: ServeConfig) -> ServeState:
    """The served reward with its state, restored from ``config.state_dir`` when a saved state is there."""
    from bayesrm.rewards import parse_reward

    state = ServeState(parse_reward(reward_spec), reference_samples=config.reference_samples)
    if config.state_dir is not None and (Path(config.state_dir) / "config.json").is_file():
        state.load(config.state_dir)
        logger.info("restored reward state from %s: %s", config.state_dir, state.stats())
    return state


def build_app(model_dir: str, reward_spec: str, config: ServeConfig) -> Any:
    from bayesrm.registry import load_scorer
    from bayesrm.serve.app import create_app
    from bayesrm.serve.template import load_splitter

    state = build_state(reward_spec, config)
    splitter = load_splitter(config.chat_template)
    scorer = load_scorer(model_dir, device=config.device)
    return create_app(scorer, state, splitter, config, model_name=str(model_dir))


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket (port 0: the OS picks a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {err.strerror}") from None
    sock.listen(2048)
    return sock


def serve(app: Any, config: ServeConfig) -> None:
    """Serve until SIGINT / SIGTERM; uvicorn drains requests, then the app saves its state."""
    import uvicorn

    sock = bind(config.host, config.port)
    host, port = sock.getsockname()[:2]
    if config.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning("bayesrm serve: listening on %s, reachable from other machines", config.host)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=10, access_log=False))
    print(f"bayesrm serve: listening on http://{host}:{port}", file=sys.stderr, flush=True)
    server.run(sockets=[sock])
