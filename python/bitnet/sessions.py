"""Sessions for Model.logits and Model.perplexity: one private KV cache per call.

Generation runs on the engine (:mod:`bitnet.engine`); scoring a whole sequence needs every row
of logits and no sampling, so it borrows a :class:`bitnet._core.Session` (the same decoder over
a private cache) from this small pool. Concurrent calls from several threads get separate
sessions and run in parallel (the forward pass releases the GIL).
"""

from __future__ import annotations

import threading

from . import _core
from .errors import BitnetError

__all__ = ["SessionPool", "make_session"]


def make_session(
    model: _core.Model, n_ctx: int, n_batch: int, n_threads: int, kv_cache: str
) -> _core.Session:
    """A Session whose KV cache has type kv_cache ("f32", "f16", "q8_0")."""
    return _core.Session(model, n_ctx, n_batch, n_threads, kv_type=kv_cache)


class SessionPool:
    """Sessions over one model's weights, lent one per call.

    Args:
        model: The shared weights.
        n_ctx: Context length of each session (0: the model's training context).
        n_batch: Most tokens per forward pass.
        n_threads: Threads of each forward pass (0: the default).
        kv_cache: KV cache type.
        max_idle: Idle sessions kept for reuse (the KV pages a kept session has touched stay
            allocated).
    """

    def __init__(
        self,
        model: _core.Model,
        n_ctx: int,
        n_batch: int,
        *,
        n_threads: int = 0,
        kv_cache: str = "f16",
        max_idle: int = 1,
    ) -> None:
        self._model = model
        self._n_batch = n_batch
        self._n_threads = n_threads
        self._kv_cache = kv_cache
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._closed = False
        first = make_session(model, n_ctx, n_batch, n_threads, kv_cache)  # validates options
        self.n_ctx = int(first.n_ctx)
        self.n_threads = int(first.n_threads)
        self._idle: list[_core.Session] = [first]

    def acquire(self) -> _core.Session:
        """An idle session, or a new one; its cache is empty."""
        with self._lock:
            if self._closed:
                raise BitnetError("the model has been closed")
            session = self._idle.pop() if self._idle else None
        if session is None:
            session = make_session(
                self._model, self.n_ctx, self._n_batch, self._n_threads, self._kv_cache
            )
        session.truncate(0)
        return session

    def release(self, session: _core.Session) -> None:
        """Takes a session back."""
        with self._lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(session)

    def close(self) -> None:
        """Drops every idle session; sessions still lent are dropped when returned."""
        with self._lock:
            self._closed = True
            self._idle.clear()
