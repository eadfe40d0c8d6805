"""ServerSettings: what ``bitnet serve`` was asked for, shared by the app, uvicorn and Ray."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ParameterError

__all__ = ["ServerSettings"]

DEFAULT_MAX_BODY = 8 << 20  # bytes: a 128k-token prompt is about 0.5 MB of text


@dataclass(frozen=True)
class ServerSettings:
    """Options of one server (one model).

    Attributes:
        model: A .gguf path, hub repository or registry name; None: the bundled model.
        revision: Hub branch, tag or commit.
        model_id: The name clients use in ``model`` and /v1/models lists (None: the file's name
            without its extension, or the hub name as given).
        host: Address to listen on.
        port: Port to listen on.
        n_ctx: Most tokens per sequence (0: the model's training context).
        n_batch: Most tokens per engine step.
        n_threads: Threads per step (None: the physical cores).
        n_parallel: Most sequences decoding at once.
        kv_budget: KV-cache positions across all sequences (None: n_parallel * n_ctx).
        kv_cache: "f16", "q8_0" or "f32".
        max_queue: Most requests waiting for a slot; beyond it 503 with Retry-After.
        api_keys: Keys a client must send (Authorization: Bearer, or X-Api-Key); empty: none.
        max_body_bytes: Largest request body; beyond it 413.
        grace_s: On SIGTERM, how long in-flight requests may take to finish.
        chat_template: A Jinja2 chat template used instead of the model's own (None: the
            model's, or bitnet's default when the file has none).
        exact_topk: Load the exact-top-k pre-pass of the output layer (``bitnet.load``'s
            exact_topk): requests sampling with top_k > 0 or temperature 0, without logprobs,
            read about half of the output layer, with identical tokens.
    """

    model: str | None = None
    revision: str | None = None
    model_id: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    n_ctx: int = 0
    n_batch: int = 512
    n_threads: int | None = None
    n_parallel: int = 4
    kv_budget: int | None = None
    kv_cache: str = "f16"
    max_queue: int = 64
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    max_body_bytes: int = DEFAULT_MAX_BODY
    grace_s: float = 30.0
    chat_template: str | None = None
    exact_topk: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ParameterError("port", f"port must be in [0, 65535], got {self.port}")
        if self.max_body_bytes < 1024:
            raise ParameterError(
                "max_body_bytes", f"max_body_bytes must be at least 1024, got {self.max_body_bytes}"
            )
        if not 0 <= self.grace_s <= 86400:
            raise ParameterError("grace_s", f"grace_s must be in [0, 86400], got {self.grace_s}")
        if any(not k for k in self.api_keys):
            raise ParameterError("api_keys", "an API key may not be empty")

    @staticmethod
    def keys_from_env(given: str | None) -> tuple[str, ...]:
        """API keys from a flag value or BITNET_API_KEY (either may list several, comma-separated)."""
        raw = given if given is not None else os.environ.get("BITNET_API_KEY", "")
        return tuple(k.strip() for k in raw.split(",") if k.strip())

    def default_model_id(self, path: str) -> str:
        """The model id when none is configured."""
        if self.model_id:
            return self.model_id
        if self.model is not None and not Path(self.model).exists():
            return self.model  # a hub or registry name, as the user wrote it
        return Path(path).stem

    def load_options(self) -> dict[str, Any]:
        """Keyword arguments of :func:`bitnet.load` for this server."""
        return {
            "n_ctx": self.n_ctx,
            "n_batch": self.n_batch,
            "n_threads": self.n_threads,
            "kv_cache": self.kv_cache,
            "n_parallel": self.n_parallel,
            "kv_budget": self.kv_budget,
            "max_queue": self.max_queue,
            "exact_topk": self.exact_topk,
            "revision": self.revision,
            "progress": False,
        }
