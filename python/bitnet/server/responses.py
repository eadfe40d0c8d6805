"""OpenAI's response objects, built from the engine's Chunk and Completion values.

Shapes follow openai-python's types (``ChatCompletion``, ``ChatCompletionChunk``,
``Completion``): the same ``id`` on every chunk of a stream, ``usage: null`` on every chunk but
the optional last one, ``logprobs.content[]`` entries ``{token, logprob, bytes, top_logprobs}``
for chat and the legacy ``{tokens, token_logprobs, top_logprobs, text_offset}`` for completions.
The engine's finish reason "context" is OpenAI's "length"; "cancelled" never reaches a client.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from ..engine.results import FinishReason, TokenLogprob
from ..tokenizer import Tokenizer

__all__ = ["Formatter", "finish_reason", "usage"]

_FLOOR = -9999.0  # OpenAI's log-probability of a token that cannot be sampled (JSON has no -inf)


def finish_reason(reason: FinishReason | None) -> str | None:
    """OpenAI's finish_reason for the engine's ("context" is "length")."""
    if reason is None:
        return None
    return "length" if reason in ("length", "context") else "stop"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _logprob(value: float) -> float:
    return value if math.isfinite(value) else _FLOOR


class Formatter:
    """Builds the JSON objects of one request (one id, one creation time).

    Args:
        endpoint: "chat" or "completions".
        request_id: The id every object of the request carries ("chatcmpl-...", "cmpl-...").
        created: Unix time of the request.
        model: The model id the client sees.
        tokenizer: Names control tokens in log-probabilities (their bytes are empty).
    """

    def __init__(
        self, endpoint: str, request_id: str, created: int, model: str, tokenizer: Tokenizer
    ) -> None:
        self.endpoint = endpoint
        self.id = request_id
        self.created = created
        self.model = model
        self._tok = tokenizer

    # -- log-probabilities ----------------------------------------------------------------
    def _token(self, token_id: int, data: bytes) -> str:
        return data.decode("utf-8", errors="replace") if data else self._tok.token_text(token_id)

    def chat_logprobs(self, entries: Sequence[TokenLogprob]) -> dict[str, Any]:
        """``{"content": [...], "refusal": null}`` for chat choices."""
        content = []
        for e in entries:
            content.append(
                {
                    "token": self._token(e.token_id, e.token),
                    "logprob": _logprob(e.logprob),
                    "bytes": list(e.token),
                    "top_logprobs": [
                        {
                            "token": self._token(t.token_id, t.token),
                            "logprob": _logprob(t.logprob),
                            "bytes": list(t.token),
                        }
                        for t in e.top
                    ],
                }
            )
        return {"content": content, "refusal": None}

    def completion_logprobs(
        self, entries: Sequence[TokenLogprob], n_top: int, text_offset: int
    ) -> dict[str, Any]:
        """The legacy completions shape; ``text_offset`` is where the first token's text starts."""
        tokens, values, tops, offsets = [], [], [], []
        offset = text_offset
        for e in entries:
            token = self._token(e.token_id, e.token)
            tokens.append(token)
            values.append(_logprob(e.logprob))
            offsets.append(offset)
            offset += len(token) if e.token else 0
            top: dict[str, float] = {}
            for t in e.top[:n_top]:
                top.setdefault(self._token(t.token_id, t.token), _logprob(t.logprob))
            tops.append(top)
        return {
            "tokens": tokens,
            "token_logprobs": values,
            "top_logprobs": tops,
            "text_offset": offsets,
        }

    # -- whole responses ------------------------------------------------------------------
    def response(self, choices: list[dict[str, Any]], usage_: dict[str, int]) -> dict[str, Any]:
        """A ``chat.completion`` or ``text_completion`` object."""
        return {
            "id": self.id,
            "object": "chat.completion" if self.endpoint == "chat" else "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
            "usage": usage_,
        }

    def choice(
        self, index: int, text: str, reason: FinishReason, logprobs: dict[str, Any] | None
    ) -> dict[str, Any]:
        if self.endpoint == "chat":
            return {
                "index": index,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": logprobs,
                "finish_reason": finish_reason(reason),
            }
        return {
            "index": index,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": finish_reason(reason),
        }

    # -- stream chunks --------------------------------------------------------------------
    def chunk(
        self,
        index: int,
        *,
        text: str | None = None,
        role: bool = False,
        logprobs: dict[str, Any] | None = None,
        reason: FinishReason | None = None,
    ) -> dict[str, Any]:
        """One choice's piece: a ``chat.completion.chunk`` or ``text_completion`` object."""
        if self.endpoint == "chat":
            delta: dict[str, Any] = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {"index": index, "delta": delta}
        else:
            choice = {"index": index, "text": text or ""}
        choice["logprobs"] = logprobs
        choice["finish_reason"] = finish_reason(reason)
        return self._chunk([choice], None)

    def usage_chunk(self, usage_: dict[str, int]) -> dict[str, Any]:
        """The last chunk of a stream with ``include_usage``: no choices, the usage."""
        return self._chunk([], usage_)

    def _chunk(
        self, choices: list[dict[str, Any]], usage_: dict[str, int] | None
    ) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk" if self.endpoint == "chat" else "text_completion",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": choices,
            "usage": usage_,
        }
