"""Perplexity of a model on a text, by two methods.

* ``"sliding"`` (bitnet's own, the default of :meth:`bitnet.Model.perplexity`): windows of
  ``window`` tokens start every ``stride`` tokens; each token is scored once, by the first window
  that reaches it, so every token after the first window has at least ``window - stride`` tokens
  of context. Every token but the first is scored.
* ``"llama.cpp"`` (``llama-perplexity``'s default method, for numbers comparable with llama.cpp
  and bitnet.cpp): the text is tokenized once (with BOS when the model adds one; special-token
  text is read as plain text), cut into ``len // n_ctx`` non-overlapping chunks of ``n_ctx``
  tokens (the tail is dropped), and the first token of every chunk is replaced by BOS when the
  model adds BOS. In each chunk only the second half is scored: positions ``n_ctx/2 .. n_ctx-2``
  predict the next token, ``n_ctx - 1 - n_ctx/2`` tokens per chunk, each with at least half a
  chunk of context. The text must have at least ``2 * n_ctx`` tokens, as llama-perplexity
  requires. The result is ``exp(mean NLL)``, with llama.cpp's uncertainty estimate.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ParameterError, ShapeError
from ._session import Cursor, borrow, log_softmax_rows
from .logits_file import LogitsWriter

if TYPE_CHECKING:
    from ..model import Model

__all__ = [
    "METHODS",
    "PerplexityResult",
    "llama_cpp_chunks",
    "perplexity",
    "perplexity_llama_cpp",
    "perplexity_sliding",
    "scored_logits",
]

METHODS = ("sliding", "llama.cpp")
LLAMA_CPP_DEFAULT_CTX = 512  # llama-perplexity's -c default


@dataclass(frozen=True)
class PerplexityResult:
    """What a perplexity run measured.

    Attributes:
        method: ``"sliding"`` or ``"llama.cpp"``.
        ppl: exp(nll_sum / n_scored).
        stderr: Uncertainty of ppl, computed as llama.cpp does: ppl * sqrt(var(NLL) / (n - 1)).
        nll_sum: Total negative log-likelihood of the scored tokens, in nats.
        n_scored: Tokens scored.
        n_tokens: Tokens of the text (BOS included when added).
        window: Tokens per window (sliding) or per chunk (llama.cpp).
        stride: Tokens between window starts (llama.cpp: equal to window).
        running_ppl: Perplexity over the chunks so far, after each chunk (llama.cpp prints these
            as ``[1]x,[2]y,...``); after each window for the sliding method.
    """

    method: str
    ppl: float
    stderr: float
    nll_sum: float
    n_scored: int
    n_tokens: int
    window: int
    stride: int
    running_ppl: tuple[float, ...]


class _Accumulator:
    def __init__(self) -> None:
        self.nll = 0.0
        self.nll2 = 0.0
        self.count = 0
        self.running: list[float] = []

    def add(self, nll: np.ndarray) -> None:
        self.nll += float(nll.sum())
        self.nll2 += float(np.square(nll).sum())
        self.count += int(nll.size)

    def mark(self) -> None:
        self.running.append(math.exp(self.nll / self.count) if self.count else math.nan)

    def result(self, method: str, n_tokens: int, window: int, stride: int) -> PerplexityResult:
        mean = self.nll / self.count
        ppl = math.exp(mean)
        var = self.nll2 / self.count - mean * mean
        stderr = ppl * math.sqrt(var / (self.count - 1)) if var > 0 and self.count > 1 else 0.0
        return PerplexityResult(
            method=method,
            ppl=ppl,
            stderr=stderr,
            nll_sum=self.nll,
            n_scored=self.count,
            n_tokens=n_tokens,
            window=window,
            stride=stride,
            running_ppl=tuple(self.running),
        )


def _nll(
    cursor: Cursor,
    inputs: Sequence[int],
    targets: Sequence[int],
    acc: _Accumulator,
    sink: Callable[[np.ndarray], None] | None = None,
) -> None:
    """Feeds inputs; adds -log p(targets[i] | ..., inputs[i]) for every i to acc.

    sink, when given, receives every piece of logits, in order.
    """
    for offset, logits in cursor.feed_rows(inputs):
        if sink is not None:
            sink(logits)
        lse, _ = log_softmax_rows(logits)
        tgt = np.asarray(targets[offset : offset + len(logits)], dtype=np.int64)
        acc.add(lse - logits[np.arange(len(logits)), tgt].astype(np.float64))


def _token_ids(model: Model, text: str | Sequence[int], *, special: bool) -> list[int]:
    if isinstance(text, str):
        return model.tokenize(text, special=special)
    ids = [int(t) for t in text]
    if ids and (min(ids) < 0 or max(ids) >= model.n_vocab):
        raise ShapeError(f"token ids must be in [0, {model.n_vocab})")
    return ids


def _bar(total: int, enabled: bool, unit: str) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc="perplexity")


def perplexity_sliding(
    model: Model,
    text: str | Sequence[int],
    *,
    window: int = 0,
    stride: int = 0,
    progress: bool = False,
) -> PerplexityResult:
    """Perplexity with a sliding window (see the module docstring).

    Args:
        model: The model.
        text: The evaluation text (tokenized with BOS when the model uses one), or token ids.
        window: Tokens per window (0: the model's context).
        stride: Tokens between window starts (0: half a window).
        progress: Show a progress bar.

    Raises:
        ShapeError: The text has fewer than two tokens.
        ParameterError: window or stride out of range.
    """
    ids = _token_ids(model, text, special=True)
    if len(ids) < 2:
        raise ShapeError("perplexity needs a text of at least two tokens")
    n_ctx = model.n_ctx
    window = min(window or n_ctx, n_ctx)
    stride = stride or max(1, window // 2)
    if window < 2:
        raise ParameterError("window", f"window must be >= 2, got {window}")
    if not 1 <= stride <= window:
        raise ParameterError("stride", f"need 1 <= stride <= window ({window}), got {stride}")
    n = len(ids)
    n_windows = 1 if n <= window else 1 + -(-(n - window) // stride)
    acc = _Accumulator()
    scored = 1  # tokens [0, scored) need no (more) scoring
    bar = _bar(n_windows, progress, "window")
    with borrow(model) as cursor:
        for w in range(n_windows):
            begin = w * stride
            end = min(begin + window, n)
            # Position p predicts token p + 1. Positions before `first` only give context; the
            # last token of the window predicts nothing inside it.
            first = max(scored, begin + 1) - 1
            cursor.truncate(0)
            cursor.feed(ids[begin:first])
            _nll(cursor, ids[first : end - 1], ids[first + 1 : end], acc)
            scored = max(scored, end)
            acc.mark()
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return acc.result("sliding", n, window, stride)


def llama_cpp_chunks(n_tokens: int, n_ctx: int, n_chunks: int | None = None) -> int:
    """How many chunks llama-perplexity evaluates: len // n_ctx, at most n_chunks.

    Raises:
        ShapeError: Fewer than 2 * n_ctx tokens (llama-perplexity refuses those too).
    """
    if n_ctx < 4:
        raise ParameterError("window", f"the chunk size must be >= 4 tokens, got {n_ctx}")
    if n_tokens < 2 * n_ctx:
        raise ShapeError(
            f"llama.cpp's method needs at least 2 * {n_ctx} = {2 * n_ctx} tokens with chunks of "
            f"{n_ctx}, but the text has {n_tokens}; use a longer text or a smaller window"
        )
    total = n_tokens // n_ctx
    if n_chunks is not None:
        if n_chunks < 1:
            raise ParameterError("n_chunks", f"n_chunks must be >= 1, got {n_chunks}")
        total = min(total, n_chunks)
    return total


def chunk_inputs(ids: Sequence[int], start: int, n_ctx: int, bos: int | None) -> list[int]:
    """The tokens llama.cpp decodes for the chunk at start: its first one replaced by BOS."""
    chunk = [int(t) for t in ids[start : start + n_ctx]]
    if bos is not None:
        chunk[0] = bos
    return chunk


def chunk_bos(model: Model) -> int | None:
    """The BOS token llama.cpp puts first in every chunk, or None when the model adds none."""
    tok = model.tokenizer
    return tok.bos_id if tok.add_bos and tok.bos_id is not None else None


def perplexity_llama_cpp(
    model: Model,
    text: str | Sequence[int],
    *,
    n_ctx: int = LLAMA_CPP_DEFAULT_CTX,
    n_chunks: int | None = None,
    progress: bool = False,
    on_chunk: Callable[[int, float], None] | None = None,
    logits_file: str | os.PathLike[str] | None = None,
) -> PerplexityResult:
    """Perplexity by llama-perplexity's method (see the module docstring).

    Args:
        model: The model; its context must hold n_ctx tokens.
        text: The evaluation text, or token ids (used as they are: include BOS yourself).
        n_ctx: Tokens per chunk (llama-perplexity's ``-c``, 512 by default there).
        n_chunks: Evaluate at most this many chunks (``--chunks``; None: all).
        progress: Show a progress bar.
        on_chunk: Called after each chunk with (chunk number from 1, running perplexity).
        logits_file: Also write the scored positions' log-probabilities to this file, in
            llama.cpp's format (``--kl-divergence-base``): the base of a later
            :func:`bitnet.eval.kl_divergence` or ``llama-perplexity --kl-divergence``.

    Raises:
        ShapeError: Fewer than 2 * n_ctx tokens.
        ParameterError: n_ctx larger than the model's context, or n_chunks < 1.
    """
    ids = _token_ids(model, text, special=False)
    if n_ctx > model.n_ctx:
        raise ParameterError(
            "window",
            f"chunks of {n_ctx} tokens do not fit the model's context of {model.n_ctx}; load "
            f"it with n_ctx={n_ctx} or more",
        )
    total = llama_cpp_chunks(len(ids), n_ctx, n_chunks)
    first = n_ctx // 2
    bos = chunk_bos(model)
    acc = _Accumulator()
    bar = _bar(total, progress, "chunk")
    with contextlib.ExitStack() as stack:
        writer = None
        if logits_file is not None:
            writer = stack.enter_context(
                LogitsWriter(logits_file, n_ctx, model.n_vocab, ids[: total * n_ctx])
            )
        cursor = stack.enter_context(borrow(model))
        for i in range(total):
            start = i * n_ctx
            chunk = chunk_inputs(ids, start, n_ctx, bos)
            cursor.truncate(0)
            cursor.feed(chunk[:first])
            # Positions first .. n_ctx-2 predict the original tokens after them.
            targets = ids[start + first + 1 : start + n_ctx]
            sink = writer.write_rows if writer is not None else None
            _nll(cursor, chunk[first : n_ctx - 1], targets, acc, sink)
            acc.mark()
            if on_chunk is not None:
                on_chunk(i + 1, acc.running[-1])
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    return acc.result("llama.cpp", len(ids), n_ctx, n_ctx)


def scored_logits(
    model: Model, ids: Sequence[int], n_ctx: int, chunk: int
) -> tuple[np.ndarray, np.ndarray]:
    """The logits llama.cpp's method scores in one chunk, and the tokens they predict.

    Returns:
        (logits, targets): float32 (n_ctx - 1 - n_ctx/2, n_vocab) for positions n_ctx/2 ..
        n_ctx-2 of chunk number `chunk` (from 0) of ids, and int64 the tokens after them.
    """
    first = n_ctx // 2
    start = chunk * n_ctx
    if chunk < 0 or start + n_ctx > len(ids):
        raise ShapeError(f"chunk {chunk} of {n_ctx} tokens is outside the {len(ids)} tokens")
    inputs = chunk_inputs(ids, start, n_ctx, chunk_bos(model))
    with borrow(model) as cursor:
        cursor.truncate(0)
        cursor.feed(inputs[:first])
        rows = [logits for _, logits in cursor.feed_rows(inputs[first : n_ctx - 1])]
    targets = np.asarray(ids[start + first + 1 : start + n_ctx], dtype=np.int64)
    return np.concatenate(rows), targets


def perplexity(
    model: Model,
    text: str | Sequence[int],
    *,
    method: str = "sliding",
    window: int = 0,
    stride: int = 0,
    n_chunks: int | None = None,
    progress: bool = False,
) -> PerplexityResult:
    """Perplexity of model on text by either method.

    Args:
        model: The model.
        text: The evaluation text, or token ids.
        method: ``"sliding"`` or ``"llama.cpp"``.
        window: Tokens per window or chunk (0: the model's context).
        stride: Sliding method only: tokens between windows (0: half a window).
        n_chunks: llama.cpp method only: evaluate at most this many chunks.
        progress: Show a progress bar.
    """
    if method == "sliding":
        if n_chunks is not None:
            raise ParameterError("n_chunks", "n_chunks applies to method='llama.cpp' only")
        return perplexity_sliding(model, text, window=window, stride=stride, progress=progress)
    if method == "llama.cpp":
        if stride:
            raise ParameterError("stride", "stride applies to method='sliding' only")
        return perplexity_llama_cpp(
            model, text, n_ctx=window or model.n_ctx, n_chunks=n_chunks, progress=progress
        )
    raise ParameterError("method", f"method must be one of {METHODS}, got {method!r}")
