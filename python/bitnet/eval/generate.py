"""Generation for the harness: many prompts (token ids), each with its own stop strings."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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

    Requests with the same options (a task's requests all have the same ``until`` and
    ``max_gen_toks``) go to the model's engine together (:meth:`bitnet.Model.generate_batch`),
    which runs them in one continuous batch.

    Args:
        model: The model.
        requests: What to generate.
        on_done: Called with (request index, text) as each group of requests finishes.
    """
    groups: dict[tuple[Any, ...], list[int]] = {}
    for i, req in enumerate(requests):
        key = (req.max_tokens, req.stop, tuple(sorted(req.options.items())))
        groups.setdefault(key, []).append(i)
    out: list[str | None] = [None] * len(requests)
    for members in groups.values():
        first = requests[members[0]]
        prompts = [[int(t) for t in requests[i].prompt] for i in members]
        results = model.generate_batch(
            prompts, max_tokens=first.max_tokens, stop=first.stop, **dict(first.options)
        )
        for i, completion in zip(members, results, strict=True):
            out[i] = completion.text
            if on_done is not None:
                on_done(i, completion.text)
    return [text or "" for text in out]
