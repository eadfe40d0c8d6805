"""Answering a generation request: submit its choices to the engine, then either wait for them
(one JSON response) or stream their chunks as server-sent events.

A request with several prompts or ``n`` > 1 is several engine requests (choice ``i`` of a seeded
request uses seed + i), submitted together: if one cannot be queued, those already queued are
cancelled and the client gets the error. Whatever ends the answer early (the client going away,
an error, the server stopping) cancels every engine request still running, so their slots and
KV blocks are freed at the engine's next step.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.responses import JSONResponse, Response

from ..engine.results import Chunk, Completion, TokenLogprob
from ..errors import BitnetError
from .errors import APIError, from_bitnet_error
from .metrics import Metrics
from .protocol import ParsedRequest
from .responses import Formatter, usage
from .sse import DONE, PING, ClientGone, EventStream, event, race_disconnect

__all__ = ["Choice", "answer"]

log = logging.getLogger("bitnet.server")

PING_INTERVAL_S = 15.0


@dataclass
class Choice:
    """One engine request of an HTTP request."""

    index: int  # the choice's index in the response
    prompt_index: int
    handle: Any  # bitnet.engine.RequestHandle
    prefix: str = ""  # echo: the prompt text in front of the generated text


def _new_id(endpoint: str) -> str:
    return ("chatcmpl-" if endpoint == "chat" else "cmpl-") + secrets.token_hex(12)


async def submit(
    engine: Any, prompts: Sequence[Any], req: ParsedRequest, *, strip_leading_space: bool = False
) -> list[Choice]:
    """Queues every choice of a request (in a worker thread: tokenizing a long prompt and
    compiling a JSON schema take milliseconds).

    Raises:
        APIError: The engine refused one of them; the others were cancelled.
    """
    choices: list[Choice] = []

    def submit_all() -> None:
        for p, prompt in enumerate(prompts):
            for i in range(req.n):
                params = req.params_for(i)
                handle = engine.submit(
                    list(prompt) if isinstance(prompt, tuple) else prompt,
                    params,
                    strip_leading_space=strip_leading_space,
                )
                choices.append(Choice(index=p * req.n + i, prompt_index=p, handle=handle))

    try:
        await asyncio.to_thread(submit_all)
    except BaseException as e:
        for c in choices:
            c.handle.cancel()
        if isinstance(e, BitnetError):
            prompt_param = "messages" if req.endpoint == "chat" else "prompt"
            raise from_bitnet_error(
                e, prompt_param=prompt_param, param_names=dict(req.param_names)
            ) from None
        raise
    return choices


def _prompt_tokens(choices: Sequence[Choice]) -> int:
    """Prompt tokens of the request: each distinct prompt once (n choices share it)."""
    seen: dict[int, int] = {}
    for c in choices:
        seen.setdefault(c.prompt_index, int(c.handle.prompt_tokens))
    return sum(seen.values())


def _shutting_down() -> APIError:
    return APIError(
        503,
        "The server is shutting down; the request was stopped before it finished.",
        type="unavailable_error",
        code="shutting_down",
    )


async def answer(
    request_receive: Any,
    engine: Any,
    prompts: Sequence[Any],
    req: ParsedRequest,
    fmt: Formatter,
    metrics: Metrics,
    *,
    echo_texts: Sequence[str] = (),
    strip_leading_space: bool = False,
) -> Response:
    """The HTTP response of a parsed generation request.

    Raises:
        APIError: The request could not be queued.
        ClientGone: The client left before a non-streamed answer was ready.
    """
    t0 = time.perf_counter()
    choices = await submit(engine, prompts, req, strip_leading_space=strip_leading_space)
    if req.echo:
        for c in choices:
            c.prefix = echo_texts[c.prompt_index]
    if req.stream:
        metrics.in_flight.inc()

        def gone() -> None:
            metrics.disconnects.inc()

        return EventStream(_events(choices, req, fmt, metrics, t0), on_disconnect=gone)
    metrics.in_flight.inc()
    try:
        results = await race_disconnect(
            request_receive, asyncio.gather(*(c.handle.aresult() for c in choices))
        )
    except ClientGone:
        metrics.disconnects.inc()
        raise
    finally:
        for c in choices:
            c.handle.cancel()  # a no-op for finished requests; frees the rest at once
        metrics.in_flight.dec()
    now = time.perf_counter()
    metrics.duration.observe(now - t0)
    out = []
    for c, done in zip(choices, results, strict=True):
        if done.finish_reason == "cancelled":
            raise _shutting_down()
        out.append(
            fmt.choice(
                c.index,
                c.prefix + done.text,
                done.finish_reason,
                _logprobs(fmt, req, done, c.prefix),
            )
        )
        if done.completion_tokens:
            metrics.ttft.observe(done.timings.queued_s + done.timings.prompt_s)
    completion_tokens = sum(r.completion_tokens for r in results)
    return JSONResponse(fmt.response(out, usage(_prompt_tokens(choices), completion_tokens)))


def _logprobs(
    fmt: Formatter, req: ParsedRequest, done: Completion, prefix: str
) -> dict[str, Any] | None:
    if done.logprobs is None or not req.params.logprobs:
        return None
    if req.endpoint == "chat":
        return fmt.chat_logprobs(done.logprobs)
    return fmt.completion_logprobs(done.logprobs, req.completion_logprobs or 0, len(prefix))


async def _pump(index: int, handle: Any, queue: asyncio.Queue[tuple[int, Any]]) -> None:
    """Forwards one engine request's chunks into the shared queue, then None (or the error)."""
    try:
        async for chunk in handle:
            await queue.put((index, chunk))
        await queue.put((index, None))
    except asyncio.CancelledError:
        raise
    except Exception as e:  # noqa: BLE001 (reported to the client as an error event)
        await queue.put((index, e))


async def _events(
    choices: list[Choice], req: ParsedRequest, fmt: Formatter, metrics: Metrics, t0: float
) -> AsyncIterator[bytes]:
    """The SSE events of a streamed request: chunks of every choice as they come, then the
    usage chunk (when asked for) and ``[DONE]``; an error event and no ``[DONE]`` on failure."""
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
    tasks = [asyncio.ensure_future(_pump(i, c.handle, queue)) for i, c in enumerate(choices)]
    completion_tokens = 0
    first_token = True
    last_token_t = [0.0] * len(choices)
    offsets = [len(c.prefix) for c in choices]  # completions logprobs: where the next text starts
    getter: asyncio.Future[tuple[int, Any]] | None = None
    try:
        for c in choices:
            if req.endpoint == "chat":
                yield event(fmt.chunk(c.index, text="", role=True))
            elif c.prefix:
                yield event(fmt.chunk(c.index, text=c.prefix))
        remaining = len(choices)
        while remaining:
            # Not asyncio.wait_for: on Python < 3.12 it can swallow a cancellation (the client
            # went away) when the item arrives at the same moment, and the stream would go on.
            if getter is None:
                getter = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait((getter,), timeout=PING_INTERVAL_S)
            if not done:
                yield PING
                continue
            i, item = getter.result()
            getter = None
            c = choices[i]
            if item is None:
                remaining -= 1
                continue
            if isinstance(item, Exception):
                err = (
                    from_bitnet_error(item)
                    if isinstance(item, BitnetError)
                    else APIError(500, f"internal error: {item}", type="server_error")
                )
                log.error("request %s failed while streaming: %s", fmt.id, item)
                yield event(err.body())
                return
            chunk: Chunk = item
            if chunk.finish_reason == "cancelled":
                yield event(_shutting_down().body())
                return
            now = time.perf_counter()
            if chunk.token_ids:
                completion_tokens += len(chunk.token_ids)
                if first_token:
                    metrics.ttft.observe(now - t0)
                    first_token = False
                if last_token_t[i]:
                    gap = (now - last_token_t[i]) / len(chunk.token_ids)
                    for _ in chunk.token_ids:
                        metrics.itl.observe(gap)
                last_token_t[i] = now
            if not chunk.text and chunk.finish_reason is None and not chunk.logprobs:
                continue
            logprobs = _chunk_logprobs(fmt, req, chunk.logprobs, offsets[i])
            offsets[i] += len(chunk.text)
            yield event(
                fmt.chunk(
                    c.index,
                    text=chunk.text if chunk.text or req.endpoint != "chat" else None,
                    logprobs=logprobs,
                    reason=chunk.finish_reason,
                )
            )
        metrics.duration.observe(time.perf_counter() - t0)
        if req.include_usage:
            yield event(fmt.usage_chunk(usage(_prompt_tokens(choices), completion_tokens)))
        yield DONE
    finally:
        if getter is not None:
            getter.cancel()
        for t in tasks:
            t.cancel()
        for c in choices:
            c.handle.cancel()
        metrics.in_flight.dec()


def _chunk_logprobs(
    fmt: Formatter, req: ParsedRequest, entries: Sequence[TokenLogprob] | None, offset: int
) -> dict[str, Any] | None:
    if not req.params.logprobs or entries is None:
        return None
    if req.endpoint == "chat":
        return fmt.chat_logprobs(entries)
    return fmt.completion_logprobs(entries, req.completion_logprobs or 0, offset)
