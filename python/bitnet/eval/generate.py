"""Generation for the harness: many prompts (token ids), each with its own stop strings."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..generation import SamplingParams

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["GenerationRequest", "generate_all"]


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt to continue.

    Attributes:
        prompt: Token ids (BOS included when wanted); must fit the context with max_tokens.
        max_tokens: Most tokens to generate.
        stop: Strings that end the text (not included).
        options: Sampling options by bitnet's names (temperature, top_k, top_p, min_p,
            repeat_penalty, seed).
    """

    prompt: Sequence[int]
    max_tokens: int
    stop: tuple[str, ...] = ()
    options: Mapping[str, Any] = field(default_factory=dict)


def generate_all(
    model: Model,
    requests: Sequence[GenerationRequest],
    *,
    on_done: Callable[[int, str], None] | None = None,
) -> list[str]:
    """The generated text of every request, in order.

    Args:
        model: The model.
        requests: What to generate.
        on_done: Called with (request index, text) as each request finishes.
    """
    out: list[str] = []
    for i, req in enumerate(requests):
        params = SamplingParams(max_tokens=req.max_tokens, stop=req.stop, **dict(req.options))
        ids = [int(t) for t in req.prompt]
        text = "".join(model._stream_ids(ids, params, strip_leading_space=False))
        out.append(text)
        if on_done is not None:
            on_done(i, text)
    return out
