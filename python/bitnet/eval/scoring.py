"""Log-likelihoods of continuations, computing shared prefixes once.

Multiple-choice tasks ask for the same context with several continuations, and few-shot prompts
share their examples across questions. :func:`score_continuations` orders the requests so that
sequences sharing a prefix are next to each other, and keeps the KV cache of the longest prefix
the next request shares with the previous one: only the tokens after it are computed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ContextLengthError, ShapeError
from ._session import Cursor, borrow, log_softmax_rows

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["Score", "rolling_windows", "score_continuations"]


@dataclass(frozen=True)
class Score:
    """The log-likelihood of one continuation.

    Attributes:
        logprob: Sum over the continuation's tokens of log p(token | everything before), nats.
        is_greedy: Every continuation token is the likeliest one at its position.
        n_tokens: Tokens in the continuation.
    """

    logprob: float
    is_greedy: bool
    n_tokens: int


def score_continuations(
    model: Model,
    requests: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    on_done: Callable[[int, Score], None] | None = None,
    progress: bool = False,
) -> list[Score]:
    """Log-likelihood of each continuation after its context.

    A sequence longer than the context is cut on the left, keeping the continuation and as
    much of the context as fits (as the harness's Hugging Face backend does).

    Args:
        model: The model.
        requests: (context ids, continuation ids) pairs; contexts must not be empty (start them
            with BOS), continuations must not be empty.
        on_done: Called with (request index, score) as each request is scored (in the order of
            computation, not of the requests).
        progress: Show a progress bar.

    Returns:
        One Score per request, in the order of the requests.

    Raises:
        ShapeError: An empty context or continuation, or token ids out of range.
        ContextLengthError: A continuation that alone does not fit in the context.
    """
    n_ctx = model.n_ctx
    prepared: list[tuple[list[int], int]] = []  # (whole sequence, continuation length)
    for i, (context, continuation) in enumerate(requests):
        if len(context) == 0 or len(continuation) == 0:
            raise ShapeError(f"request {i}: context and continuation must both be non-empty")
        if len(continuation) > n_ctx:
            raise ContextLengthError(
                len(continuation),
                n_ctx,
                f"request {i}: the continuation alone has {len(continuation)} tokens but the "
                f"context holds {n_ctx}",
            )
        whole = [int(t) for t in context] + [int(t) for t in continuation]
        if min(whole) < 0 or max(whole) >= model.n_vocab:
            raise ShapeError(f"request {i}: token ids must be in [0, {model.n_vocab})")
        prepared.append((whole[-(n_ctx + 1) :], len(continuation)))
    # Lexicographic order puts sequences with a common prefix next to each other.
    order = sorted(range(len(prepared)), key=lambda i: prepared[i][0])
    results: list[Score | None] = [None] * len(prepared)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(order), unit="request", desc="loglikelihood")
    with borrow(model) as cursor:
        for i in order:
            whole, n_cont = prepared[i]
            score = _score_one(cursor, whole, n_cont)
            results[i] = score
            if on_done is not None:
                on_done(i, score)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return [r for r in results if r is not None]


def _score_one(cursor: Cursor, whole: list[int], n_cont: int) -> Score:
    inputs = whole[:-1]  # position p predicts whole[p + 1]
    first = len(inputs) - n_cont  # the first position whose prediction is scored
    keep = cursor.rewind(inputs, first)
    cursor.feed(inputs[keep:first])
    logprob = 0.0
    greedy = True
    targets = np.asarray(whole[first + 1 :], dtype=np.int64)
    for offset, logits in cursor.feed_rows(inputs[first:]):
        lse, top = log_softmax_rows(logits)
        tgt = targets[offset : offset + len(logits)]
        logprob += float((logits[np.arange(len(logits)), tgt] - lse).sum())
        greedy = greedy and bool((top == tgt).all())
    return Score(logprob, greedy, n_cont)


def rolling_windows(
    tokens: Sequence[int], prefix: int, max_len: int
) -> list[tuple[list[int], list[int]]]:
    """Disjoint scoring windows of a long text: the harness's rolling log-likelihood scheme.

    The first window is [prefix] + tokens[:max_len - 1] and scores tokens[:max_len]; each next
    window scores the next max_len tokens after one token of context, except the last, which
    scores what is left with a full window of context before it. Every token is scored once.
    This is lm-evaluation-harness's ``get_rolling_token_windows(context_len=1)`` followed by
    ``make_disjoint_window``.

    Returns:
        (context, continuation) pairs for :func:`score_continuations`.
    """
    if max_len < 1:
        raise ShapeError(f"max_len must be >= 1, got {max_len}")
    out: list[tuple[list[int], list[int]]] = []
    toks = [int(t) for t in tokens]
    if not toks:
        return out
    n_first = min(max_len, len(toks))
    out.append(([prefix], toks[:n_first]))
    done = n_first
    while done < len(toks):
        n = min(len(toks) - done, max_len)
        end = done + n
        window = toks[max(0, end - max_len - 1) : end - 1]
        context = window[: len(window) - (n - 1)]
        out.append((context, toks[end - n : end]))
        done = end
    return out
