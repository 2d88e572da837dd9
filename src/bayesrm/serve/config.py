"""The one configuration of the reward server (``bayesrm serve``); CLI flags are generated from it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ServeConfig:
    """How ``bayesrm serve`` listens, batches, limits input and keeps reward state."""

    host: str = "127.0.0.1"
    """Interface to bind. Loopback by default; binding anything else exposes the model to the network."""
    port: int = 8000
    """TCP port (0 = a free port chosen by the OS; the bound address is printed on startup)."""
    max_batch: int = 64
    """Most (prompt, response) pairs gathered into one batched forward pass."""
    max_wait_ms: float = 5.0
    """Longest time the first request of a batch waits for others to join it (milliseconds)."""
    batch_size: int = 64
    """Scoring batch size inside one forward (a batch larger than this is scored in chunks)."""
    max_items: int = 256
    """Most items (queries / inputs / responses) one request may carry."""
    max_text_chars: int = 32768
    """Longest text (prompt, response or query) accepted, in characters."""
    max_body_bytes: int = 8_000_000
    """Largest request body accepted, in bytes."""
    chat_template: str = "smollm2"
    """How query texts are split into prompt and response: 'smollm2' (the embedded policy's template),
    a tokenizer directory, a .jinja file, or 'none' (prompts are plain text; the response is the query
    minus its prompt, so requests must give the prompts)."""
    state_dir: str | None = None
    """Directory where the reward's running state (UP's mean sigma, per-prompt log-sigmoid references)
    is saved atomically and restored from on start. None keeps it in memory only."""
    save_interval_s: float = 1.0
    """Save the state at most this often, after a batch (0 = after every batch, before answering it)."""
    reference_samples: int = 4
    """For a log_sigmoid reward: the first N responses scored for a prompt become its reference samples
    (unless POST /reference supplied them); the level r_ref(x) is their q-quantile."""
    token_env: str = "BAYESRM_SERVE_TOKEN"
    """Environment variable holding an optional bearer token; when it is set, every endpoint except
    /health requires 'Authorization: Bearer <token>'."""
    device: str = "cpu"
    """Device the scorer runs on."""

    def __post_init__(self) -> None:
        for name in ("max_batch", "batch_size", "max_items", "max_text_chars", "max_body_bytes", "reference_samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"ServeConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"ServeConfig.port must be in [0, 65535], got {self.port}")
        if self.max_wait_ms < 0 or self.save_interval_s < 0:
            raise ValueError("ServeConfig.max_wait_ms and save_interval_s must be >= 0")
