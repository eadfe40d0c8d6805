"""RequestHandle: what submit() returns; the caller's end of one request's stream.

The engine thread pushes :class:`Chunk` objects into the handle; the caller takes them out from
any thread (``for chunk in handle``, ``handle.result()``) or from asyncio
(``async for chunk in handle``, ``await handle.aresult()``). No thread is started per request:
an asyncio consumer waiting for the next chunk parks a future that the engine thread completes
with ``loop.call_soon_threadsafe`` (only when someone is waiting, so a fast producer costs one
deque append per token).

A consumer that stops early cancels the request: breaking out of a loop, an exception
(KeyboardInterrupt included) while waiting, an asyncio task cancelled while waiting, or an
iterator dropped before the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator

from .results import Chunk, Completion

__all__ = ["RequestHandle"]


class RequestHandle:
    """One submitted request.

    Attributes:
        request_id: The engine's id of the request (given at submit, or generated).
        prompt_tokens: Tokens of the prompt, BOS included.

    Thread safety: every method may be called from any thread; iterate a handle from one
    consumer at a time.
    """

    def __init__(
        self, request_id: str, prompt_tokens: int, cancel: Callable[[RequestHandle], None]
    ) -> None:
        self.request_id = request_id
        self.prompt_tokens = prompt_tokens
        self._cancel_cb = cancel
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._items: deque[Chunk] = deque()
        self._completion: Completion | None = None
        self._error: BaseException | None = None
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._cancel_requested = False
        self._keepalive: object = None  # whatever must outlive the request (the Model)

    def __repr__(self) -> str:
        state = "done" if self.done else "running"
        return f"RequestHandle({self.request_id!r}, prompt_tokens={self.prompt_tokens}, {state})"

    # -- the engine's side ---------------------------------------------------------------------
    def _push(self, chunk: Chunk, completion: Completion | None = None) -> None:
        with self._lock:
            self._items.append(chunk)
            if completion is not None:
                self._completion = completion
            self._wake_locked()

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            if self._completion is None and self._error is None:
                self._error = error
                self._wake_locked()

    def _wake_locked(self) -> None:
        self._cond.notify_all()
        waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            with contextlib.suppress(RuntimeError):  # the loop was closed meanwhile
                loop.call_soon_threadsafe(_resolve, fut)

    # -- the caller's side ---------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """Whether the request has ended (its last chunk may still be unread)."""
        with self._lock:
            return self._completion is not None or self._error is not None

    @property
    def completion(self) -> Completion | None:
        """The final result once the request has ended, else None (does not wait)."""
        with self._lock:
            return self._completion

    def cancel(self) -> None:
        """Cancels the request (idempotent; nothing happens once it has ended).

        The engine drops it at its next step, in whatever state it is (queued, processing the
        prompt, generating), and frees its slot and KV blocks; the stream then ends with a
        chunk whose finish_reason is "cancelled".
        """
        with self._lock:
            if self._cancel_requested or self._completion is not None or self._error is not None:
                return
            self._cancel_requested = True
        self._cancel_cb(self)

    def __iter__(self) -> Iterator[Chunk]:
        """Chunks as they are produced (blocking); the last has finish_reason set."""
        return _ChunkIterator(self)

    def __aiter__(self) -> AsyncIterator[Chunk]:
        """The same from asyncio, without blocking the event loop."""
        return _AsyncChunkIterator(self)

    def result(self, timeout: float | None = None) -> Completion:
        """Waits for the end and returns the Completion, consuming any unread chunks.

        An exception while waiting (KeyboardInterrupt) cancels the request.

        Raises:
            TimeoutError: timeout seconds passed first (the request keeps running).
            BitnetError: The engine failed or was closed before the request ended.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            with self._lock:
                while self._completion is None and self._error is None:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        raise TimeoutError(
                            f"request {self.request_id} did not finish within {timeout} s"
                        )
                    self._cond.wait(left)
                self._items.clear()
                if self._error is not None:
                    raise self._error
                assert self._completion is not None
                return self._completion
        except TimeoutError:
            raise
        except BaseException:
            self.cancel()
            raise

    async def aresult(self) -> Completion:
        """Awaits the end and returns the Completion (asyncio). A cancelled awaiting task
        cancels the request."""
        while True:
            with self._lock:
                if self._completion is not None:
                    self._items.clear()
                    return self._completion
                if self._error is not None:
                    raise self._error
            await self._next_async()  # the next chunk (consumed), or an error

    def _next_sync(self) -> Chunk:
        with self._lock:
            while not self._items:
                if self._error is not None:
                    raise self._error
                self._cond.wait()
            return self._items.popleft()

    async def _next_async(self) -> Chunk:
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._items:
                    return self._items.popleft()
                if self._error is not None:
                    raise self._error
                fut: asyncio.Future[None] = loop.create_future()
                self._waiters.append((loop, fut))
            try:
                await fut
            except BaseException:  # the consuming task was cancelled
                self.cancel()
                raise


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _ChunkIterator:
    """Iterates a handle; cancels the request when dropped or interrupted before the end."""

    def __init__(self, handle: RequestHandle) -> None:
        self._handle = handle
        self._finished = False

    def __iter__(self) -> _ChunkIterator:
        return self

    def __next__(self) -> Chunk:
        if self._finished:
            raise StopIteration
        try:
            chunk = self._handle._next_sync()
        except BaseException:
            self._finished = True
            self._handle.cancel()
            raise
        if chunk.finish_reason is not None:
            self._finished = True
        return chunk

    def __del__(self) -> None:
        if not self._finished:
            with contextlib.suppress(Exception):
                self._handle.cancel()


class _AsyncChunkIterator:
    """Async twin of _ChunkIterator."""

    def __init__(self, handle: RequestHandle) -> None:
        self._handle = handle
        self._finished = False

    def __aiter__(self) -> _AsyncChunkIterator:
        return self

    async def __anext__(self) -> Chunk:
        if self._finished:
            raise StopAsyncIteration
        try:
            chunk = await self._handle._next_async()
        except BaseException:
            self._finished = True
            self._handle.cancel()
            raise
        if chunk.finish_reason is not None:
            self._finished = True
        return chunk

    def __del__(self) -> None:
        if not self._finished:
            with contextlib.suppress(Exception):
                self._handle.cancel()
