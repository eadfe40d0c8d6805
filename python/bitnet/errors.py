"""Exceptions raised by bitnet, from Python code and from the C++ core alike.

Every error a user can cause (a corrupt file, an unsupported checkpoint, a bad argument, a full
queue) is one of these, with a message that names the file, tensor, key or parameter and what
was expected and found. The server maps them to HTTP statuses (docs/serving.md).
"""

from __future__ import annotations

__all__ = [
    "BitnetError",
    "ContextLengthError",
    "FormatError",
    "ParameterError",
    "QueueFullError",
    "ShapeError",
    "UnsupportedError",
]


class BitnetError(Exception):
    """Base class of all bitnet errors."""


class FormatError(BitnetError, ValueError):
    """A model file or checkpoint is malformed: truncated, corrupt, missing keys or tensors."""


class ShapeError(BitnetError, ValueError):
    """An argument has the wrong shape or is out of range (token ids, context length)."""


class UnsupportedError(BitnetError, ValueError):
    """A well-formed input asks for something bitnet does not implement."""


class ParameterError(ShapeError, TypeError):
    """An option has the wrong type or is out of range.

    Attributes:
        param: The name of the option, as the caller spelled it ("top_k", "stop").
    """

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


class ContextLengthError(ShapeError):
    """A prompt (plus what must be generated after it) does not fit in the context.

    Attributes:
        n_prompt: Tokens in the prompt.
        n_ctx: Tokens the context holds.
    """

    def __init__(self, n_prompt: int, n_ctx: int, message: str | None = None) -> None:
        super().__init__(
            message
            or f"the prompt has {n_prompt} tokens but the context holds {n_ctx}; shorten it "
            "or use a larger context"
        )
        self.n_prompt = n_prompt
        self.n_ctx = n_ctx


class QueueFullError(BitnetError):
    """The engine's queue of waiting requests is full; try again later.

    Attributes:
        retry_after_s: A suggested wait in seconds before trying again.
    """

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
