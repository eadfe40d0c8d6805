"""Sessions for scoring: borrowing one from a Model, feeding it tokens, log-softmax of rows.

Everything in bitnet.eval that runs the model goes through these helpers, so the way a Model
lends its KV caches is known in exactly one place.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .. import _core
    from ..model import Model

__all__ = ["Cursor", "borrow", "log_softmax_rows", "max_rows"]

# Logit rows per decode call: at most 16M floats (64 MiB) of float32 logits at a time.
_MAX_LOGIT_FLOATS = 1 << 24


def max_rows(n_vocab: int, budget: int = _MAX_LOGIT_FLOATS) -> int:
    """Most logit rows of n_vocab floats to request from one decode call."""
    return max(1, budget // max(1, n_vocab))


@contextmanager
def borrow(model: Model) -> Iterator[Cursor]:
    """Lends one of the model's sessions (a private KV cache, empty), for one caller."""
    pool = model._live_pool()
    session = pool.acquire()
    try:
        yield Cursor(session, model.n_vocab)
    finally:
        pool.release(session)


class Cursor:
    """A borrowed session and the tokens its KV cache holds (positions 0..len-1).

    Not thread-safe: one cursor serves one caller.
    """

    def __init__(self, session: _core.Session, n_vocab: int) -> None:
        self._session = session
        self._tokens: list[int] = []
        self.n_vocab = n_vocab
        self.n_ctx = int(session.n_ctx)
        session.truncate(0)

    @property
    def tokens(self) -> list[int]:
        """The tokens the cache holds (do not modify)."""
        return self._tokens

    def rewind(self, tokens: Sequence[int], limit: int) -> int:
        """Keeps the longest cached prefix of tokens, at most limit long; returns its length."""
        n = min(len(self._tokens), len(tokens), limit)
        keep = 0
        while keep < n and self._tokens[keep] == tokens[keep]:
            keep += 1
        self.truncate(keep)
        return keep

    def truncate(self, n: int) -> None:
        """Forgets every position from n on."""
        self._session.truncate(n)
        del self._tokens[n:]

    def feed(self, tokens: Sequence[int]) -> None:
        """Appends tokens to the cache without computing logits."""
        if len(tokens) == 0:
            return
        self._decode(tokens, False)

    def feed_rows(
        self, tokens: Sequence[int], *, rows: int = 0
    ) -> Iterator[tuple[int, np.ndarray]]:
        """Appends tokens, yielding (offset, logits) per piece of at most `rows` tokens.

        logits is float32 (n, n_vocab): row i predicts the token after tokens[offset + i].
        """
        step = rows or max_rows(self.n_vocab)
        for begin in range(0, len(tokens), step):
            yield begin, self._decode(tokens[begin : begin + step], True)

    def _decode(self, tokens: Sequence[int], logits: bool) -> np.ndarray:
        piece = [int(t) for t in tokens]
        try:
            out = self._session.decode(np.asarray(piece, dtype=np.int32), logits)
        except BaseException:
            # The cache may hold part of the piece: make it agree with the token record.
            self._session.truncate(len(self._tokens))
            raise
        self._tokens.extend(piece)
        return np.asarray(out)


def log_softmax_rows(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log-sum-exp and argmax of each row of float32 logits.

    Returns:
        (lse, argmax): float64 (n,) with log(sum(exp(row))) and int64 (n,). The exponentials
        are float32 (as llama.cpp's expf), summed in float64.
    """
    top = logits.max(axis=1)
    sums = np.exp(logits - top[:, None]).sum(axis=1, dtype=np.float64)
    return top.astype(np.float64) + np.log(sums), logits.argmax(axis=1)
