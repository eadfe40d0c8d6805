"""What a generation request gives back: streamed chunks and the final Completion.

One set of types for the Python API, the command line and the server: ``Model.complete`` returns
a :class:`Completion`, the engine's request handles yield :class:`Chunk` objects as tokens are
produced, and the server turns both into OpenAI JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

__all__ = ["Chunk", "Completion", "FinishReason", "Timings", "TokenLogprob", "TopLogprob"]

FinishReason = Literal["stop", "length", "context", "cancelled"]
"""Why a request ended.

* ``"stop"``: an end-of-sequence/end-of-turn token, or a stop string;
* ``"length"``: max_tokens tokens were generated;
* ``"context"``: the context is full (the prompt plus the generated tokens fill n_ctx);
* ``"cancelled"``: the caller cancelled it (or stopped iterating, or disconnected).
"""


@dataclass(frozen=True)
class TopLogprob:
    """One of the likeliest tokens at a position."""

    token_id: int
    token: bytes  # the token's bytes (may be part of a UTF-8 character)
    logprob: float  # natural log, from the distribution before temperature and truncation


@dataclass(frozen=True)
class TokenLogprob:
    """The log-probability of a generated token, with the likeliest alternatives.

    Log-probabilities are those of the model's distribution after the penalties (repetition,
    presence, frequency) and any structured-output mask, before temperature, top-k, top-p and
    min-p: what OpenAI and vLLM report.
    """

    token_id: int
    token: bytes
    logprob: float
    top: tuple[TopLogprob, ...] = ()  # descending, top_logprobs of them


@dataclass(frozen=True)
class Chunk:
    """A piece of a streamed generation.

    ``text`` is safe to show: whole UTF-8 characters, and never text that may still turn out to
    begin a stop string. It can be empty (a token whose bytes are held back). ``token_ids`` are
    the tokens sampled since the previous chunk; their text may have come out in an earlier
    chunk or may still be held back. The last chunk of a request has ``finish_reason`` set.
    """

    text: str
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[TokenLogprob, ...] | None = None  # one per token id, when requested
    finish_reason: FinishReason | None = None


@dataclass(frozen=True)
class Timings:
    """Where a request's time went, in seconds (wall clock, as seen by the engine)."""

    queued_s: float = 0.0  # submitted to first scheduled
    prompt_s: float = 0.0  # first scheduled to first token sampled (prefill)
    generate_s: float = 0.0  # first token to last
    prompt_tokens_computed: int = 0  # prompt tokens actually computed (the rest came from cache)

    @property
    def prompt_tokens_per_s(self) -> float:
        return self.prompt_tokens_computed / self.prompt_s if self.prompt_s > 0 else 0.0


@dataclass(frozen=True)
class Completion:
    """The outcome of one request.

    Attributes:
        text: The generated text (a stop string that ended it is not included).
        token_ids: Every token sampled, in order (an end-of-sequence token is not included).
        finish_reason: Why it ended (see :data:`FinishReason`).
        prompt_tokens: Tokens of the prompt, BOS included.
        completion_tokens: len(token_ids).
        logprobs: One entry per token id, when requested; else None.
        stop_sequence: The stop string that ended it, if one did.
        request_id: The engine's id of the request.
        timings: Queue, prefill and generation times.
    """

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int
    logprobs: tuple[TokenLogprob, ...] | None = None
    stop_sequence: str | None = None
    request_id: str = ""
    timings: Timings = field(default_factory=Timings)

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def generation_tokens_per_s(self) -> float:
        """Tokens per second after the first token (0 when fewer than two)."""
        t = self.timings.generate_s
        return (self.completion_tokens - 1) / t if t > 0 and self.completion_tokens > 1 else 0.0
