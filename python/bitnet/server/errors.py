"""Errors as OpenAI's API writes them: an HTTP status and ``{"error": {...}}``.

Every failure a client can cause is an :class:`APIError` with a 4xx status (or 503 when the
server is loading, shutting down or full) and a body the ``openai`` client turns into its own
exception classes: ``{"error": {"message", "type", "param", "code"}}`` with ``code`` a string
or null. docs/serving.md has the table.
"""

from __future__ import annotations

import json
import math
from typing import Any

from ..errors import BitnetError, ContextLengthError, ParameterError, QueueFullError

__all__ = ["APIError", "error_body", "from_bitnet_error"]


class APIError(Exception):
    """A request that fails with an HTTP status.

    Attributes:
        status: The HTTP status.
        message: What went wrong, naming the parameter and the expected and found values.
        type: OpenAI's error type ("invalid_request_error", "authentication_error", ...).
        param: The request parameter at fault, or None.
        code: A short machine-readable code ("context_length_exceeded"), or None.
        headers: Extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The JSON body: ``{"error": {"message", "type", "param", "code"}}``."""
        return error_body(self.message, type=self.type, param=self.param, code=self.code)

    def json_bytes(self) -> bytes:
        return json.dumps(self.body(), ensure_ascii=False).encode()


def error_body(
    message: str, *, type: str, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    """A 400 invalid_request_error."""
    return APIError(400, message, param=param, code=code or "invalid_value")


def from_bitnet_error(
    e: BitnetError, *, prompt_param: str = "prompt", param_names: dict[str, str] | None = None
) -> APIError:
    """The HTTP error of an engine exception raised for a request.

    Args:
        e: What the engine raised at submit time.
        prompt_param: The request field holding the prompt ("prompt", "messages").
        param_names: Engine option names to the request's names (``"json_schema"`` ->
            ``"response_format"``), so the error names what the client sent.
    """
    if isinstance(e, ContextLengthError):
        return APIError(
            400,
            f"This model's maximum context length is {e.n_ctx} tokens, but the prompt has "
            f"{e.n_prompt} tokens. Shorten the prompt.",
            param=prompt_param,
            code="context_length_exceeded",
        )
    if isinstance(e, QueueFullError):
        retry = max(1, min(120, math.ceil(e.retry_after_s)))
        return APIError(
            503,
            f"The server is busy: {e}. Retry after {retry} s.",
            type="unavailable_error",
            code="queue_full",
            headers={"Retry-After": str(retry)},
        )
    if isinstance(e, ParameterError):
        names = param_names or {}
        return bad_request(str(e), param=names.get(e.param, e.param))
    if isinstance(e, ValueError):  # FormatError, ShapeError, UnsupportedError: the input's fault
        return bad_request(str(e))
    return APIError(503, f"The engine failed: {e}", type="unavailable_error", code="engine_error")
