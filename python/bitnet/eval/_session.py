"""Sessions for scoring: borrowing one from a Model, feeding it tokens, log-softmax of rows.

Everything in bitnet.eval that runs the model goes through these helpers, so the way a Model
lends its KV caches is known in exactly one place.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from ..generation import Slot, common_prefix

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["Cursor", "borrow", "log_softmax_rows", "max_rows"]

# Logit rows per decode call: at most 16M floats (64 MiB) of float32 logits at a time.
_MAX_LOGIT_FLOATS = 1 << 24


def max_rows(n_vocab: int, budget: int = _MAX_LOGIT_FLOATS) -> int:
    """Most logit rows of n_vocab floats to request from one decode call."""
    return max(1, budget // max(1, n_vocab))


@contextmanager
def borrow(model: Model, prompt: Sequence[int] | None = None) -> Iterator[Cursor]:
    """Lends one of the model's sessions (the one sharing the longest prefix with prompt).

    The session goes back to the model's pool afterwards, its token record in agreement with
    its cache, so later calls can reuse what it holds.
    """
    pool = model._live_pool()
    slot = pool.acquire(prompt)
    try:
        yield Cursor(slot, model.n_vocab)
    finally:
        pool.release(slot)


class Cursor:
    """A borrowed session and the tokens its KV cache holds (positions 0..len-1).

    Not thread-safe: one cursor serves one caller.
    """

    def __init__(self, slot: Slot, n_vocab: int) -> None:
        self._slot = slot
        self.n_vocab = n_vocab
        self.n_ctx = int(slot.session.n_ctx)

    @property
    def tokens(self) -> list[int]:
        """The tokens the cache holds (do not modify)."""
        return self._slot.tokens

    def rewind(self, tokens: Sequence[int], limit: int) -> int:
        """Keeps the longest cached prefix of tokens, at most limit long; returns its length."""
        keep = min(common_prefix(self._slot.tokens, tokens), limit)
        self.truncate(keep)
        return keep

    def truncate(self, n: int) -> None:
        """Forgets every position from n on."""
        self._slot.session.truncate(n)
        del self._slot.tokens[n:]

    def feed(self, tokens: Sequence[int]) -> None:
        """Appends tokens to the cache without computing logits."""
        if len(tokens) == 0:
            return
        self._slot.tokens.extend(int(t) for t in tokens)  # release() trims it on failure
        self._slot.session.decode(np.asarray(tokens, dtype=np.int32), False)

    def feed_rows(
        self, tokens: Sequence[int], *, rows: int = 0
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Appends tokens, yielding (offset, logits) per piece of at most `rows` tokens.

        logits is float32 (n, n_vocab): row i predicts the token after tokens[offset + i].
        """
        step = rows or max_rows(self.n_vocab)
        for begin in range(0, len(tokens), step):
            piece = [int(t) for t in tokens[begin : begin + step]]
            self._slot.tokens.extend(piece)
            out = self._slot.session.decode(np.asarray(piece, dtype=np.int32), True)
            yield begin, np.asarray(out)


def log_softmax_rows(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-sum-exp and argmax of each row of float32 logits.

    Returns:
        (lse, argmax): float64 (n,) with log(sum(exp(row))) and int64 (n,). The exponentials
        are float32 (as llama.cpp's expf), summed in float64.
    """
    top = logits.max(axis=1)
    sums = np.exp(logits - top[:, None]).sum(axis=1, dtype=np.float64)
    return top.astype(np.float64) + np.log(sums), logits.argmax(axis=1)
