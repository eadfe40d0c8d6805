"""llama.cpp's log-probability files (``llama-perplexity --kl-divergence-base FILE``).

Files written here are read by ``llama-perplexity --kl-divergence`` and the other way round, so a
base run of either engine can be compared with the other. Layout (little-endian)::

    char     magic[8]     = "_logits_"
    int32    n_ctx          tokens per chunk
    int32    n_vocab
    int32    n_chunk
    int32    tokens[n_chunk * n_ctx]      the text's tokens (not BOS-replaced)
    then, per chunk, n_ctx - 1 - n_ctx/2 records (one per scored position n_ctx/2 .. n_ctx-2)
    of nv = 2 * ceil(n_vocab / 2) + 4 uint16:
        float32  scale            (max_logit - min_logit) / 65535
        float32  min_log_prob     min_logit - max_logit - log(sum(exp(logit - max_logit)))
        uint16   q[n_vocab]       round((logit - min_logit) / scale), 0 at or below min_logit
        (one uint16 of padding when n_vocab is odd)

min_logit is the row's smallest logit, but at least max_logit - 16: log-probabilities more than
16 below the top one are stored as the floor (and left out of the KL sum by the reader).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np

from ..errors import FormatError

__all__ = ["MAGIC", "LogitsReader", "LogitsWriter", "dequantize_rows", "quantize_rows"]

MAGIC = b"_logits_"


def record_width(n_vocab: int) -> int:
    """uint16 values per record."""
    return 2 * ((n_vocab + 1) // 2) + 4


def quantize_rows(logits: np.ndarray) -> np.ndarray:
    """Records of float32 logits (n, n_vocab), bit for bit as llama.cpp writes them."""
    x = np.asarray(logits, dtype=np.float32)
    n, n_vocab = x.shape
    top = x.max(axis=1)
    low = np.maximum(x.min(axis=1), top - np.float32(16))
    sums = np.exp(x - top[:, None]).sum(axis=1, dtype=np.float64)
    log_sum = np.log(sums).astype(np.float32)
    min_log_prob = (low - top - log_sum).astype(np.float32)
    scale = ((top - low) / np.float32(65535)).astype(np.float32)
    out = np.zeros((n, record_width(n_vocab)), dtype=np.uint16)
    head = np.stack([scale, min_log_prob], axis=1).astype("<f4")
    out[:, :4] = head.view("<u2").reshape(n, 4)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.where(scale > 0, np.float32(1) / scale, np.float32(0)).astype(np.float32)
        q = np.rint(inv[:, None] * (x - low[:, None]))  # ties to even, as llama.cpp's trick
    q = np.where(x > low[:, None], q, 0)
    out[:, 4 : 4 + n_vocab] = np.clip(q, 0, 65535).astype(np.uint16)
    return out


def dequantize_rows(records: np.ndarray, n_vocab: int) -> np.ndarray:
    """float32 (n, n_vocab) log-probabilities of records: scale * q + min_log_prob."""
    head = np.ascontiguousarray(records[:, :4]).view("<f4")  # (n, 2)
    q = records[:, 4 : 4 + n_vocab].astype(np.float32)
    out: np.ndarray = (head[:, :1] * q + head[:, 1:2]).astype(np.float32)
    return out


class LogitsWriter:
    """Writes a log-probability file: the header and tokens first, then records chunk by chunk.

    Example:
        >>> with LogitsWriter("base.kld", n_ctx, n_vocab, tokens) as w:  # doctest: +SKIP
        ...     w.write_rows(logits)  # per chunk, in order
    """

    def __init__(self, path: str | os.PathLike[str], n_ctx: int, n_vocab: int, tokens: list[int]):
        if len(tokens) % n_ctx:
            raise ValueError(f"tokens ({len(tokens)}) must be whole chunks of {n_ctx}")
        self.path = os.fspath(path)
        self.n_ctx = n_ctx
        self.n_vocab = n_vocab
        self._f: BinaryIO = open(self.path, "wb")  # noqa: SIM115 (closed by close())
        self._f.write(MAGIC)
        np.asarray([n_ctx, n_vocab, len(tokens) // n_ctx], dtype="<i4").tofile(self._f)
        np.asarray(tokens, dtype="<i4").tofile(self._f)

    def write_rows(self, logits: np.ndarray) -> None:
        """Appends the records of float32 logits (n, n_vocab)."""
        quantize_rows(logits).astype("<u2").tofile(self._f)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> LogitsWriter:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LogitsReader:
    """Reads a log-probability file: header and tokens at open, records chunk by chunk.

    Raises:
        FormatError: Not such a file, or truncated (names the file and what is missing).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        size = Path(self.path).stat().st_size
        self._f: BinaryIO = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        try:
            if self._f.read(8) != MAGIC:
                raise FormatError(f"{self.path}: not a llama.cpp log-probability file")
            header = np.frombuffer(self._read(12, "the header"), dtype="<i4")
            self.n_ctx, self.n_vocab, self.n_chunk = (int(v) for v in header)
            if self.n_ctx < 4 or self.n_vocab < 1 or self.n_chunk < 1:
                raise FormatError(
                    f"{self.path}: bad header n_ctx={self.n_ctx} n_vocab={self.n_vocab} "
                    f"n_chunk={self.n_chunk}"
                )
            self.rows_per_chunk = self.n_ctx - 1 - self.n_ctx // 2
            self._width = record_width(self.n_vocab)
            n_tok = self.n_ctx * self.n_chunk
            expected = 20 + 4 * n_tok + 2 * self._width * self.rows_per_chunk * self.n_chunk
            if size < expected:
                raise FormatError(
                    f"{self.path}: truncated: {self.n_chunk} chunks of {self.n_ctx} tokens over "
                    f"{self.n_vocab} tokens need {expected} bytes, the file has {size}"
                )
            tokens = np.frombuffer(self._read(4 * n_tok, "the tokens"), dtype="<i4")
            if tokens.size and (tokens.min() < 0 or tokens.max() >= self.n_vocab):
                raise FormatError(f"{self.path}: token ids outside [0, {self.n_vocab})")
            self.tokens: list[int] = [int(t) for t in tokens]
        except BaseException:
            self._f.close()
            raise

    def _read(self, n: int, what: str) -> bytes:
        data = self._f.read(n)
        if len(data) != n:
            raise FormatError(f"{self.path}: truncated in {what}")
        return data

    def read_chunk(self) -> np.ndarray:
        """The next chunk's records, uint16 (rows_per_chunk, record width)."""
        n = self.rows_per_chunk * self._width
        data = self._read(2 * n, "the log-probabilities")
        return np.frombuffer(data, dtype="<u2").reshape(self.rows_per_chunk, self._width)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> LogitsReader:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
