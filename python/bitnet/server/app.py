"""The ASGI app: OpenAI-compatible routes over one model's engine.

Routes (docs/serving.md has examples and the error table):

* ``POST /v1/chat/completions``, ``POST /v1/completions`` (also without ``/v1``): generation,
  streamed as server-sent events with ``"stream": true``;
* ``GET /v1/models``, ``GET /v1/models/{id}``: the one model served;
* ``POST /tokenize``, ``POST /detokenize``: llama-server's token endpoints;
* ``GET /health``: 503 while the model loads (or after loading failed), 200 after; no key;
* ``GET /metrics``: Prometheus text format.

:func:`create_app` returns a Starlette app that loads its model in a background thread when it
starts (so /health answers at once) or serves a model already loaded. Every failure a client can
cause is an OpenAI error envelope with a 4xx status; nothing a client sends gives a 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import BitnetError, UnsupportedError
from .config import ServerSettings
from .errors import APIError, bad_request
from .generate import answer
from .metrics import CONTENT_TYPE, Metrics
from .protocol import ParsedRequest, decode_json_body, parse_chat, parse_completion
from .responses import Formatter
from .sse import ClientGone

__all__ = ["ServerState", "create_app"]

log = logging.getLogger("bitnet.server")


@dataclass
class ServerState:
    """What the routes share: the model once loaded, and how loading went.

    Attributes:
        settings: The server's options.
        model: The loaded model (None while loading).
        model_id: The id clients use.
        status: "loading", "ready" or "failed".
        error: Why loading failed.
        metrics: The server's Prometheus metrics.
        created: Unix time the model was loaded (reported by /v1/models).
    """

    settings: ServerSettings
    model: Any = None
    model_id: str = ""
    status: str = "loading"
    error: str = ""
    metrics: Metrics = field(init=False)
    created: int = 0
    ready_event: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.metrics = Metrics(self._stats)

    def _stats(self) -> Any | None:
        return self.model.engine.stats() if self.model is not None else None

    def set_model(self, model: Any) -> None:
        """Makes a loaded model the one served: starts its engine and the JSON-schema view."""
        _ = model.engine  # created now, not by the first request
        _prepare_structured_output(model)
        if self.settings.chat_template is None and getattr(
            model, "chat_template_is_default", model.chat_template is None
        ):
            log.warning(
                "%s has no chat template: /v1/chat/completions uses bitnet's default template "
                "(docs/serving.md)",
                model.path,
            )
        self.model_id = self.settings.default_model_id(model.path)
        self.created = int(time.time())
        self.model = model
        self.status = "ready"
        self.ready_event.set()
        log.info("serving %s as %r", model.path, self.model_id)

    def shut_down(self, grace_s: float) -> None:
        """Stops taking requests (503) and lets the running ones finish within grace_s; the
        engine then cancels what is left, whose clients get a "shutting_down" error. Blocks."""
        if self.status == "stopping":
            return
        was_ready = self.status == "ready"
        self.status = "stopping"
        if was_ready:
            log.info("shutting down: in-flight requests have %.0f s to finish", grace_s)
            self.model.engine.close(drain_timeout_s=grace_s)


def _prepare_structured_output(model: Any) -> None:
    try:
        from ..engine.constraint import vocabulary

        vocabulary(model)
    except UnsupportedError as e:
        log.warning("response_format json_schema/json_object is unavailable: %s", e)


def load_model(settings: ServerSettings) -> Any:
    """Loads the model the settings name (the bundled one when none)."""
    from ..api import default_model_path
    from ..model import load

    name = settings.model if settings.model is not None else str(default_model_path())
    return load(name, **settings.load_options())


Handler = Callable[[Request, ServerState], Awaitable[Response]]


def _error_response(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


def _check_key(request: Request, keys: tuple[str, ...]) -> None:
    auth = request.headers.get("authorization", "")
    given = auth[7:].strip() if auth[:7].lower() == "bearer " else request.headers.get("x-api-key")
    if given is None:
        raise APIError(
            401,
            "Missing API key: send 'Authorization: Bearer KEY' or 'X-Api-Key: KEY'.",
            type="authentication_error",
            code="invalid_api_key",
        )
    ok = False
    for key in keys:  # every key is compared, in constant time each
        ok |= hmac.compare_digest(given.encode(), key.encode())
    if not ok:
        raise APIError(
            401, "Incorrect API key provided.", type="authentication_error", code="invalid_api_key"
        )


def _route(
    state: ServerState, handler: Handler, *, auth: bool = True, ready: bool = True
) -> Callable[[Request], Awaitable[Response]]:
    """Wraps a handler: API key, loading state, error envelope, and the request counter."""
    name = handler.__name__.lstrip("_")

    async def endpoint(request: Request) -> Response:
        try:
            if auth and state.settings.api_keys:
                _check_key(request, state.settings.api_keys)
            if ready and state.status != "ready":
                raise _unavailable(state)
            response = await handler(request, state)
        except APIError as e:
            response = _error_response(e)
        except ClientGone:
            response = Response(status_code=499)  # nobody reads it; counted as nginx does
        except Exception:  # a bug: logged with its traceback, answered in the envelope
            log.exception("internal error answering %s %s", request.method, request.url.path)
            response = _error_response(
                APIError(500, "Internal server error.", type="server_error", code="internal_error")
            )
        state.metrics.http_requests.labels(name, str(response.status_code)).inc()
        return response

    return endpoint


def _unavailable(state: ServerState) -> APIError:
    if state.status == "stopping":
        return APIError(
            503, "The server is shutting down.", type="unavailable_error", code="shutting_down"
        )
    if state.status == "failed":
        message = f"The model failed to load: {state.error}"
    else:
        message = "Loading model"
    return APIError(503, message, type="unavailable_error", code="model_not_ready")


async def _read_json(request: Request, limit: int) -> dict[str, Any]:
    declared = request.headers.get("content-length")
    too_large = APIError(
        413,
        f"The request body is larger than {limit} bytes (the server's --max-body).",
        code="request_too_large",
    )
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large
    size, parts = 0, []
    async for part in request.stream():
        size += len(part)
        if size > limit:
            raise too_large
        parts.append(part)
    return decode_json_body(b"".join(parts))


def _check_model(state: ServerState, name: str | None) -> None:
    if name is None or name in (state.model_id, state.settings.model, state.model.path):
        return
    raise APIError(
        404,
        f"The model '{name}' does not exist; this server serves '{state.model_id}'.",
        type="not_found_error",
        param="model",
        code="model_not_found",
    )


def _formatter(state: ServerState, req: ParsedRequest) -> Formatter:
    from .generate import _new_id

    return Formatter(
        req.endpoint, _new_id(req.endpoint), int(time.time()), state.model_id, state.model.tokenizer
    )


# -- handlers ---------------------------------------------------------------------------------
async def _chat_completions(request: Request, state: ServerState) -> Response:
    req = parse_chat(await _read_json(request, state.settings.max_body_bytes))
    _check_model(state, req.model)
    model = state.model
    try:
        prompt = model.apply_chat_template(
            list(req.messages), chat_template=state.settings.chat_template
        )
    except (BitnetError, TypeError) as e:  # TemplateError, a template that rejects the roles
        raise bad_request(
            f"The chat template cannot render these messages: {e}", "messages"
        ) from None
    if state.settings.chat_template is None and getattr(model, "chat_template_is_default", False):
        # bitnet's default template: a reply ends where the model starts the next turn itself
        # (the Python API's chat does the same).
        from .. import chat

        extra = tuple(getattr(chat, "DEFAULT_CHAT_STOP", ()))
        params = dataclasses.replace(req.params, stop=(*req.params.stop, *extra))
        req = dataclasses.replace(req, params=params)
    fmt = _formatter(state, req)
    return await answer(
        request.receive,
        model.engine,
        [prompt],
        req,
        fmt,
        state.metrics,
        strip_leading_space=model.tokenizer.strip_leading_space,
    )


async def _completions(request: Request, state: ServerState) -> Response:
    req = parse_completion(await _read_json(request, state.settings.max_body_bytes))
    _check_model(state, req.model)
    model = state.model
    n_vocab = model.n_vocab
    for p in req.prompts:
        if isinstance(p, tuple) and not all(0 <= t < n_vocab for t in p):
            bad = next(t for t in p if not 0 <= t < n_vocab)
            raise bad_request(f"'prompt' holds token id {bad}, outside [0, {n_vocab}).", "prompt")
    echo = (
        [p if isinstance(p, str) else model.detokenize(p) for p in req.prompts] if req.echo else []
    )
    fmt = _formatter(state, req)
    return await answer(
        request.receive, model.engine, req.prompts, req, fmt, state.metrics, echo_texts=echo
    )


def _model_card(state: ServerState) -> dict[str, Any]:
    model = state.model
    return {
        "id": state.model_id,
        "object": "model",
        "created": state.created,
        "owned_by": "bitnet",
        "meta": {
            "n_ctx": model.n_ctx,
            "n_vocab": model.n_vocab,
            "n_params": model.config.get("n_params"),
            "arch": model.config.get("arch"),
        },
    }


async def _models(request: Request, state: ServerState) -> Response:
    return JSONResponse({"object": "list", "data": [_model_card(state)]})


async def _model(request: Request, state: ServerState) -> Response:
    _check_model(state, request.path_params["model"])
    return JSONResponse(_model_card(state))


async def _tokenize(request: Request, state: ServerState) -> Response:
    body = await _read_json(request, state.settings.max_body_bytes)
    content = body.get("content")
    if not isinstance(content, str):
        raise bad_request("'content' must be a string.", "content")
    flags = {}
    for name in ("add_special", "with_pieces"):
        value = body.get(name, False)
        if not isinstance(value, bool):
            raise bad_request(f"'{name}' must be true or false.", name)
        flags[name] = value
    model = state.model
    ids = await asyncio.to_thread(model.tokenize, content, add_bos=flags["add_special"])
    if not flags["with_pieces"]:
        return JSONResponse({"tokens": ids})
    tok = model.tokenizer
    pieces: list[dict[str, Any]] = []
    for i in ids:
        data = tok.token_bytes(i)
        try:
            piece: Any = data.decode() if data else tok.token_text(i)
        except UnicodeDecodeError:
            piece = list(data)  # part of a character: its bytes, as llama-server does
        pieces.append({"id": i, "piece": piece})
    return JSONResponse({"tokens": pieces})


async def _detokenize(request: Request, state: ServerState) -> Response:
    body = await _read_json(request, state.settings.max_body_bytes)
    tokens = body.get("tokens")
    n_vocab = state.model.n_vocab
    if not isinstance(tokens, list) or not all(
        isinstance(t, int) and not isinstance(t, bool) for t in tokens
    ):
        raise bad_request("'tokens' must be an array of token ids.", "tokens")
    bad = [t for t in tokens if not 0 <= t < n_vocab]
    if bad:
        raise bad_request(f"'tokens' holds token id {bad[0]}, outside [0, {n_vocab}).", "tokens")
    return JSONResponse({"content": state.model.detokenize(tokens)})


async def _health(request: Request, state: ServerState) -> Response:
    if state.status != "ready":
        e = _unavailable(state)
        return JSONResponse(e.body(), status_code=503)
    return JSONResponse({"status": "ok"})


async def _metrics(request: Request, state: ServerState) -> Response:
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)


# -- the app ----------------------------------------------------------------------------------
def create_app(
    settings: ServerSettings,
    *,
    model: Any = None,
    on_load_failure: Callable[[BaseException], None] | None = None,
) -> Starlette:
    """The server's ASGI app.

    Args:
        settings: The server's options.
        model: A loaded :class:`bitnet.Model` to serve; None loads ``settings.model`` in a
            background thread when the app starts (/health says 503 until it is ready).
        on_load_failure: Called (from the loading thread) when loading fails; the CLI stops the
            server with it. The app keeps answering 503 otherwise.

    Returns:
        A Starlette app; ``app.state.server`` is its :class:`ServerState`.
    """
    state = ServerState(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if model is not None:
            state.set_model(model)
        else:
            threading.Thread(target=_load, name="bitnet-load", daemon=True).start()
        yield
        if state.model is not None:
            # Under uvicorn, in-flight requests had their grace period before this point;
            # whatever is left (a request that outlived it) is cancelled now.
            await asyncio.to_thread(state.model.engine.close, drain_timeout_s=0.0)

    def _load() -> None:
        try:
            state.set_model(load_model(settings))
        except BaseException as e:  # noqa: BLE001 (reported through /health and the log)
            state.status, state.error = "failed", str(e)
            state.ready_event.set()
            log.error("loading the model failed: %s", e)
            if on_load_failure is not None:
                on_load_failure(e)

    def route(path: str, handler: Handler, methods: list[str], **kw: bool) -> Route:
        return Route(path, _route(state, handler, **kw), methods=methods)

    post, get = ["POST"], ["GET"]
    routes = [
        route("/v1/chat/completions", _chat_completions, post),
        route("/chat/completions", _chat_completions, post),
        route("/v1/completions", _completions, post),
        route("/completions", _completions, post),
        route("/v1/models", _models, get),
        route("/models", _models, get),
        route("/v1/models/{model:path}", _model, get),
        route("/tokenize", _tokenize, post),
        route("/detokenize", _detokenize, post),
        route("/health", _health, get, auth=False, ready=False),
        route("/v1/health", _health, get, auth=False, ready=False),
        route("/metrics", _metrics, get, ready=False),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            e = APIError(
                404,
                f"Unknown route {request.method} {request.url.path}.",
                type="not_found_error",
                code="unknown_route",
            )
        elif exc.status_code == 405:
            e = APIError(
                405,
                f"{request.method} is not allowed on {request.url.path}.",
                code="method_not_allowed",
            )
        else:
            e = APIError(exc.status_code, str(exc.detail))
        state.metrics.http_requests.labels("other", str(e.status)).inc()
        return _error_response(e)

    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error}
    )
    app.state.server = state
    return app
