"""KL divergence between a model's token distributions and a base run's, as llama-perplexity.

The text is cut into chunks exactly as :func:`bitnet.eval.perplexity.perplexity_llama_cpp` does,
and the second half of every chunk is compared position by position:

* KL(base || model) = sum_v p_base(v) * (log p_base(v) - log p_model(v)), its mean, uncertainty
  and quantiles;
* top-1 agreement ("same top p"): how often both pick the same likeliest token;
* Δp = p_model(next token) - p_base(next token): mean, quantiles and RMS;
* both perplexities, their ratio and the correlation of their log-likelihoods.

The base is another :class:`~bitnet.Model` run in the same process (exact float64 arithmetic;
the usual choice: the same file with ``output_type="f32", kv_cache="f32", isa="ref"``), or a
llama.cpp log-probability file (:mod:`bitnet.eval.logits_file`) written by ``llama-perplexity
--kl-divergence-base`` or by ``bitnet perplexity --kl-divergence-base``; with a file, the base
log-probabilities are llama.cpp's 16-bit ones and only tokens with base log-probability above
-16 enter the sum, exactly as llama.cpp computes it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ParameterError, ShapeError
from ._session import Cursor, borrow, log_softmax_rows, max_rows
from .logits_file import LogitsReader, dequantize_rows
from .perplexity import chunk_bos, chunk_inputs, llama_cpp_chunks

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["KlResult", "KlStats", "kl_divergence"]

QUANTILES = (0.999, 0.99, 0.95, 0.9, 0.5, 0.1, 0.05, 0.01, 0.001)
DP_QUANTILES = (0.999, 0.99, 0.95, 0.9, 0.75, 0.5, 0.25, 0.1, 0.05, 0.01, 0.001)


@dataclass(frozen=True)
class KlResult:
    """The statistics llama-perplexity --kl-divergence prints, in fractions (not %).

    Every ``*_err`` is the uncertainty of the value before it, as llama.cpp estimates it.
    """

    n_tokens: int
    ppl: float
    ppl_err: float
    ppl_base: float
    ppl_base_err: float
    ln_ppl_ratio: float
    ln_ppl_ratio_err: float
    ppl_ratio: float
    ppl_ratio_err: float
    ln_ppl_correlation: float
    kl_mean: float
    kl_err: float
    kl_max: float
    kl_min: float
    kl_quantiles: dict[float, float] = field(default_factory=dict)
    dp_mean: float = 0.0
    dp_err: float = 0.0
    dp_max: float = 0.0
    dp_min: float = 0.0
    dp_quantiles: dict[float, float] = field(default_factory=dict)
    dp_rms: float = 0.0
    dp_rms_err: float = 0.0
    same_top: float = 0.0
    same_top_err: float = 0.0


class KlStats:
    """Accumulates the per-token comparisons of a KL run (for scripts that keep base logits).

    Example:
        >>> stats = KlStats()  # doctest: +SKIP
        >>> stats.add_logits(logits, base_logits, targets)  # per chunk
        >>> stats.result().kl_mean  # doctest: +SKIP
    """

    def __init__(self) -> None:
        self.nll: list[np.ndarray] = []
        self.nll_base: list[np.ndarray] = []
        self.kl: list[np.ndarray] = []
        self.dp: list[np.ndarray] = []
        self.same = 0

    def add(self, nll: np.ndarray, nll_base: np.ndarray, kl: np.ndarray, same: np.ndarray) -> None:
        self.nll.append(nll)
        self.nll_base.append(nll_base)
        self.kl.append(kl)
        self.dp.append(np.exp(-nll) - np.exp(-nll_base))
        self.same += int(same.sum())

    def add_logits(self, logits: np.ndarray, base_logits: np.ndarray, targets: np.ndarray) -> None:
        """Compares float32 logits (n, n_vocab) with the base's at the same positions, in
        float64; targets (n,) are the tokens that followed."""
        q = logits.astype(np.float64)
        q -= q.max(axis=1, keepdims=True)
        q -= np.log(np.exp(q).sum(axis=1, keepdims=True))
        p = base_logits.astype(np.float64)
        p -= p.max(axis=1, keepdims=True)
        p -= np.log(np.exp(p).sum(axis=1, keepdims=True))
        kl = (np.exp(p) * (p - q)).sum(axis=1)
        r = np.arange(len(q))
        tgt = np.asarray(targets, dtype=np.int64)
        same = logits.argmax(axis=1) == base_logits.argmax(axis=1)
        self.add(-q[r, tgt], -p[r, tgt], kl, same)

    @property
    def count(self) -> int:
        """Tokens compared so far."""
        return sum(int(x.size) for x in self.nll)

    def result(self) -> KlResult:
        """The statistics so far (at least 2 tokens)."""
        nll = np.concatenate(self.nll)
        base = np.concatenate(self.nll_base)
        kl = np.concatenate(self.kl)
        dp = np.concatenate(self.dp)
        n = int(nll.size)
        if n < 2:
            raise ShapeError(f"KL statistics need at least 2 scored tokens, got {n}")

        def mean_err(x: np.ndarray) -> tuple[float, float]:
            # llama.cpp: sqrt((E[x^2] - E[x]^2) / (n - 1)), 0 for 10 values or fewer
            m = float(x.mean())
            var = float(np.square(x).mean()) - m * m
            return m, math.sqrt(var / (n - 1)) if var > 0 and n > 10 else 0.0

        ln_ppl, ln_ppl_err = mean_err(nll)
        ln_base, ln_base_err = mean_err(base)
        cov = (float((nll * base).mean()) - ln_ppl * ln_base) / (n - 1) if n >= 10 else 0.0
        ratio = ln_ppl - ln_base
        ratio_err = math.sqrt(max(0.0, ln_ppl_err**2 + ln_base_err**2 - 2 * cov))
        denom = ln_ppl_err * ln_base_err
        kl_mean, kl_err = mean_err(kl)
        dp_mean, dp_err = mean_err(dp)
        mse, mse_err = mean_err(np.square(dp))
        rms = math.sqrt(mse)
        same = self.same / n
        return KlResult(
            n_tokens=n,
            ppl=math.exp(ln_ppl),
            ppl_err=math.exp(ln_ppl) * ln_ppl_err,
            ppl_base=math.exp(ln_base),
            ppl_base_err=math.exp(ln_base) * ln_base_err,
            ln_ppl_ratio=ratio,
            ln_ppl_ratio_err=ratio_err,
            ppl_ratio=math.exp(ratio),
            ppl_ratio_err=math.exp(ratio) * ratio_err,
            ln_ppl_correlation=cov / denom if denom > 0 else 1.0,
            kl_mean=kl_mean,
            kl_err=kl_err,
            kl_max=float(kl.max()),
            kl_min=float(kl.min()),
            kl_quantiles={q: _percentile(kl, q) for q in QUANTILES},
            dp_mean=dp_mean,
            dp_err=dp_err,
            dp_max=float(dp.max()),
            dp_min=float(dp.min()),
            dp_quantiles={q: _percentile(dp, q) for q in DP_QUANTILES},
            dp_rms=rms,
            dp_rms_err=0.5 / rms * mse_err if rms > 0 else 0.0,
            same_top=same,
            same_top_err=math.sqrt(same * (1 - same) / (n - 1)),
        )


def _percentile(values: np.ndarray, fraction: float) -> float:
    # llama.cpp's: linear interpolation between the sorted values around fraction * (n - 1)
    return float(np.quantile(values, fraction, method="linear"))


def kl_divergence(
    model: Model,
    text: str | Sequence[int] | None = None,
    *,
    base: Model | str,
    n_ctx: int = 512,
    n_chunks: int | None = None,
    progress: bool = False,
    on_chunk: Callable[[int, KlResult], None] | None = None,
) -> KlResult:
    """Compares model's next-token distributions with a base's, chunk by chunk.

    Args:
        model: The model under test (e.g. loaded with ``output_type="q8_0"``).
        text: The evaluation text or token ids. With a base file, None uses the file's tokens
            (llama.cpp's way); a text must then tokenize to the file's tokens.
        base: A Model (run here, on the same tokens) or the path of a llama.cpp log-probability
            file (written by ``--kl-divergence-base``).
        n_ctx: Tokens per chunk, with a base Model (a file carries its own).
        n_chunks: Compare at most this many chunks.
        progress: Show a progress bar.
        on_chunk: Called after each chunk with (chunk number from 1, statistics so far); only
            once at least 2 tokens have been compared.

    Raises:
        ShapeError: Too short a text, or a text whose tokens differ from the file's.
        FormatError: A base file that is not a llama.cpp log-probability file, or is truncated.
        ParameterError: A base model with another vocabulary size.
    """
    stats = KlStats()
    bos = chunk_bos(model)
    if isinstance(base, str):
        with LogitsReader(base) as reader:
            if reader.n_vocab != model.n_vocab:
                raise ParameterError(
                    "base",
                    f"{base}: log-probabilities over {reader.n_vocab} tokens, but the model "
                    f"has {model.n_vocab}",
                )
            ids = reader.tokens
            if reader.n_ctx > model.n_ctx:
                raise ParameterError(
                    "base",
                    f"{base}: chunks of {reader.n_ctx} tokens do not fit the model's context "
                    f"of {model.n_ctx}; load it with n_ctx={reader.n_ctx} or more",
                )
            if text is not None:
                mine = text if not isinstance(text, str) else model.tokenize(text, special=False)
                if [int(t) for t in mine[: len(ids)]] != ids:
                    raise ShapeError(
                        f"{base}: the text does not tokenize to the tokens stored in the file"
                    )
            total = reader.n_chunk if n_chunks is None else min(reader.n_chunk, n_chunks)
            _run(model, ids, reader.n_ctx, total, bos, stats, reader, progress, on_chunk)
    else:
        if text is None:
            raise ShapeError("kl_divergence with a base model needs a text")
        if base.n_vocab != model.n_vocab:
            raise ParameterError(
                "base", f"the base model has {base.n_vocab} tokens, the model {model.n_vocab}"
            )
        ids = model.tokenize(text, special=False) if isinstance(text, str) else list(text)
        for m in (model, base):
            if n_ctx > m.n_ctx:
                raise ParameterError(
                    "n_ctx", f"chunks of {n_ctx} tokens do not fit {m.path}'s context {m.n_ctx}"
                )
        total = llama_cpp_chunks(len(ids), n_ctx, n_chunks)
        _run(model, ids, n_ctx, total, bos, stats, base, progress, on_chunk)
    return stats.result()


def _run(
    model: Model,
    ids: Sequence[int],
    n_ctx: int,
    total: int,
    bos: int | None,
    stats: KlStats,
    base: Model | LogitsReader,
    progress: bool,
    on_chunk: Callable[[int, KlResult], None] | None,
) -> None:
    first = n_ctx // 2
    rows = max_rows(model.n_vocab, 1 << 22)  # several float64 copies of each piece are alive
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="chunk", desc="kl-divergence")
    with borrow(model) as cursor:
        for i in range(total):
            start = i * n_ctx
            chunk = chunk_inputs(ids, start, n_ctx, bos)
            inputs = chunk[first : n_ctx - 1]
            targets = np.asarray(ids[start + first + 1 : start + n_ctx], dtype=np.int64)
            if isinstance(base, LogitsReader):
                _compare_file(cursor, chunk, first, inputs, targets, base, stats, rows)
            else:
                with borrow(base) as base_cursor:
                    _compare_models(cursor, base_cursor, chunk, first, inputs, targets, stats, rows)
            if on_chunk is not None and stats.count >= 2:
                on_chunk(i + 1, stats.result())
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()


def _compare_models(
    cursor: Cursor,
    base: Cursor,
    chunk: list[int],
    first: int,
    inputs: list[int],
    targets: np.ndarray,
    stats: KlStats,
    rows: int,
) -> None:
    for c in (cursor, base):
        c.truncate(0)
        c.feed(chunk[:first])
    for (offset, logits), (_, base_logits) in zip(
        cursor.feed_rows(inputs, rows=rows), base.feed_rows(inputs, rows=rows), strict=True
    ):
        stats.add_logits(logits, base_logits, targets[offset : offset + len(logits)])


def _compare_file(
    cursor: Cursor,
    chunk: list[int],
    first: int,
    inputs: list[int],
    targets: np.ndarray,
    reader: LogitsReader,
    stats: KlStats,
    rows: int,
) -> None:
    base_chunk = reader.read_chunk()  # uint16 (n_ctx - 1 - first, nv)
    cursor.truncate(0)
    cursor.feed(chunk[:first])
    for offset, logits in cursor.feed_rows(inputs, rows=rows):
        n = len(logits)
        lse, top = log_softmax_rows(logits)
        q = logits.astype(np.float64) - lse[:, None]  # model log-probabilities
        p = dequantize_rows(base_chunk[offset : offset + n], reader.n_vocab)  # float32
        mask = p > -16.0
        kl = np.where(mask, np.exp(p) * (p - q), 0.0).sum(axis=1)
        r = np.arange(n)
        tgt = targets[offset : offset + n]
        stats.add(-q[r, tgt], -p[r, tgt].astype(np.float64), kl, top == p.argmax(axis=1))
