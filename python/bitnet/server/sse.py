"""Server-sent events, and noticing a client that went away.

:class:`EventStream` sends ``data: <json>\\n\\n`` events from an async iterator while listening
for the client's disconnect at the same time, so a client that closes its connection is noticed
at once, even while its request waits in the queue and no event is being sent, and not only at
the next write. The iterator is then closed, which cancels the engine request (its ``finally``).
:func:`race_disconnect` does the same for a non-streamed answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["ClientGone", "EventStream", "event", "race_disconnect"]

T = TypeVar("T")

DONE = b"data: [DONE]\n\n"
PING = b": ping\n\n"  # an SSE comment: keeps proxies from closing an idle stream


class ClientGone(Exception):
    """The client closed its connection before the answer was complete."""


def event(obj: dict[str, Any]) -> bytes:
    """One SSE event carrying a JSON object."""
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def race_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Awaits work, unless the client disconnects first.

    Raises:
        ClientGone: The client disconnected; work was cancelled (its cleanup has run).
    """
    task = asyncio.ensure_future(work)
    listener = asyncio.ensure_future(_wait_disconnect(receive))
    try:
        await asyncio.wait((task, listener), return_when=asyncio.FIRST_COMPLETED)
    finally:
        listener.cancel()
        if not task.done():
            task.cancel()
    if task.cancelled() or not task.done():
        await asyncio.gather(task, return_exceptions=True)
        raise ClientGone
    return task.result()


class EventStream(Response):
    """An ASGI response streaming SSE bytes from an async iterator (status 200).

    Args:
        events: Yields encoded events (``event(...)``, ``DONE``, ``PING``).
        on_disconnect: Called once when the client goes away before the stream ended.
        headers: Extra response headers.
    """

    def __init__(
        self,
        events: AsyncIterator[bytes],
        *,
        on_disconnect: Callable[[], None] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self._events = events
        self._on_disconnect = on_disconnect
        self._raw_headers = [
            (b"content-type", b"text/event-stream; charset=utf-8"),
            (b"cache-control", b"no-cache"),
            (b"x-accel-buffering", b"no"),  # nginx: do not buffer the stream
        ] + [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def stream() -> None:
            await send({"type": "http.response.start", "status": 200, "headers": self._raw_headers})
            async for data in self._events:
                await send({"type": "http.response.body", "body": data, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})

        task = asyncio.ensure_future(stream())
        listener = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait((task, listener), return_when=asyncio.FIRST_COMPLETED)
        finally:
            listener.cancel()
            gone = not task.done()
            if gone:
                task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            aclose = getattr(self._events, "aclose", None)
            if aclose is not None:
                await aclose()  # runs the generator's finally: cancels the engine requests
        if gone and self._on_disconnect is not None:
            self._on_disconnect()
        if not gone and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
