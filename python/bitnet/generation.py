"""The machinery behind Model.generate/stream/chat: sessions, sampling options, text assembly.

Thread-safety model: a :class:`SessionPool` lends each call its own session (KV cache) over the
model's shared, immutable weights. Concurrent calls from several threads run in parallel on
separate caches (the C++ forward pass releases the GIL) and never see each other's state. Idle
sessions remember the tokens their cache holds; a call takes the idle session sharing the
longest prefix with its prompt, so the next turn of a chat recomputes only what is new.
"""

from __future__ import annotations

import codecs
import secrets
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import _core
from .errors import BitnetError, ShapeError

__all__ = ["SamplingParams", "SessionPool", "Slot", "TextStream", "generate_tokens"]


@dataclass(frozen=True)
class SamplingParams:
    """Options of one generation (see :meth:`bitnet.Model.generate` for their meaning)."""

    max_tokens: int = 256
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    seed: int | None = None
    stop: Sequence[str] = field(default=())  # stored as a tuple

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            raise TypeError("stop must be a sequence of strings, not a string")
        checks = [
            (self.max_tokens >= 0, f"max_tokens must be >= 0, got {self.max_tokens}"),
            (self.temperature >= 0, f"temperature must be >= 0, got {self.temperature}"),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1], got {self.top_p}"),
            (0 <= self.min_p <= 1, f"min_p must be in [0, 1], got {self.min_p}"),
            (self.repeat_penalty > 0, f"repeat_penalty must be > 0, got {self.repeat_penalty}"),
            (self.repeat_last_n >= 0, f"repeat_last_n must be >= 0, got {self.repeat_last_n}"),
            (
                self.seed is None or 0 <= self.seed < 2**64,
                f"seed must be in [0, 2^64): {self.seed}",
            ),
            (all(isinstance(s, str) for s in self.stop), "stop must hold strings"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        object.__setattr__(self, "stop", tuple(s for s in self.stop if s))

    def sampler(self, n_vocab: int) -> _core.Sampler:
        """A C++ sampler for these options (a fresh random seed when seed is None)."""
        return _core.Sampler(
            n_vocab,
            temperature=self.temperature,
            top_k=self.top_k,
            top_p=self.top_p,
            min_p=self.min_p,
            repeat_penalty=self.repeat_penalty,
            repeat_last_n=self.repeat_last_n,
            seed=secrets.randbits(64) if self.seed is None else self.seed,
        )


class TextStream:
    """Turns generated token bytes into text pieces that are safe to show.

    * Only complete UTF-8 characters come out: a character split across tokens is held back
      until its last byte arrives (invalid bytes become U+FFFD, never a broken string).
    * Text that might be the start of a stop string is held back until it is clear; a stop
      string ends the stream and is never emitted, even when it spans several tokens.

    Example:
        >>> s = TextStream(stop=("END",))
        >>> s.push(b"caf\\xc3"), s.push(b"\\xa9 E"), s.push(b"ND more"), s.stopped
        ('caf', 'é ', '', True)
    """

    def __init__(self, stop: Sequence[str] = (), *, strip_leading_space: bool = False) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._pending = ""
        self._strip = strip_leading_space
        self.stopped = False

    def push(self, data: bytes) -> str:
        """Adds bytes; returns the text that can be shown now (possibly empty)."""
        if self.stopped:
            return ""
        return self._release(self._decoder.decode(data))

    def flush(self) -> str:
        """Ends the stream; returns what was held back (minus any stop string)."""
        if self.stopped:
            return ""
        text = self._release(self._decoder.decode(b"", final=True))
        rest, self._pending = self._pending, ""
        return text + rest

    def _release(self, text: str) -> str:
        if self._strip and text:
            text = text.removeprefix(" ")
            self._strip = not text  # strip only the very first character of the output
        pending = self._pending + text
        cut = min((i for i in (pending.find(s) for s in self._stop) if i >= 0), default=-1)
        if cut >= 0:
            self.stopped = True
            self._pending = ""
            return pending[:cut]
        hold = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(pending)), hold, -1):
                if pending.endswith(s[:n]):
                    hold = n
                    break
        self._pending = pending[len(pending) - hold :]
        return pending[: len(pending) - hold]


@dataclass
class Slot:
    """A session and the tokens its KV cache holds, in order."""

    session: _core.Session
    tokens: list[int]


class SessionPool:
    """Sessions over one model's weights, lent one per call (see the module docstring).

    Args:
        model: The shared weights.
        n_ctx: Context length of each session.
        n_batch: Most tokens per forward pass.
        max_idle: Idle sessions kept for reuse; more are dropped when returned (the KV cache
            pages a session has touched stay allocated while it is kept).
    """

    def __init__(
        self,
        model: _core.Model,
        n_ctx: int,
        n_batch: int,
        max_idle: int = 2,
        *,
        n_threads: int = 0,
        kv_type: str = "f16",
    ) -> None:
        self._model = model
        self._n_batch = n_batch
        self._n_threads = n_threads
        self._kv_type = kv_type
        self._max_idle = max_idle
        self._lock = threading.Lock()
        self._closed = False
        # Validates n_ctx / n_batch / n_threads now.
        first = _core.Session(model, n_ctx, n_batch, n_threads, kv_type=kv_type)
        self.n_ctx = int(first.n_ctx)
        self.n_threads = int(first.n_threads)
        self._idle: list[Slot] = [Slot(first, [])]

    def acquire(self, prompt: Sequence[int] | None = None) -> Slot:
        """An idle session sharing the longest prefix with prompt, or a new one."""
        with self._lock:
            if self._closed:
                raise BitnetError("the model has been closed")
            best = -1
            best_len = -1
            for i, slot in enumerate(self._idle):
                n = common_prefix(slot.tokens, prompt) if prompt is not None else -len(slot.tokens)
                if n > best_len:
                    best, best_len = i, n
            if best >= 0:
                return self._idle.pop(best)
        session = _core.Session(
            self._model, self.n_ctx, self._n_batch, self._n_threads, kv_type=self._kv_type
        )
        return Slot(session, [])

    def release(self, slot: Slot) -> None:
        """Takes a session back, first making its token record agree with its cache."""
        n = min(len(slot.tokens), int(slot.session.n_past))
        slot.session.truncate(n)
        del slot.tokens[n:]
        with self._lock:
            if self._closed:
                return
            self._idle.append(slot)
            if len(self._idle) > self._max_idle:
                self._idle.pop(0)

    def close(self) -> None:
        """Drops every idle session; sessions still lent are dropped when returned."""
        with self._lock:
            self._closed = True
            self._idle.clear()


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the common prefix of two token sequences."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def prefill(slot: Slot, ids: Sequence[int]) -> np.ndarray:
    """Brings the slot's cache to hold exactly ids; returns the logits after the last one.

    Only the tokens after the prefix already cached are computed (at least the last one, whose
    logits are needed).
    """
    keep = min(common_prefix(slot.tokens, ids), len(ids) - 1)
    slot.session.truncate(keep)
    del slot.tokens[keep:]
    new = list(ids[keep:])
    slot.tokens.extend(new)  # recorded first: release() trims it if decode never happens
    return np.asarray(slot.session.decode(np.asarray(new, dtype=np.int32), False))


def generate_tokens(
    slot: Slot,
    prompt: Sequence[int],
    params: SamplingParams,
    sampler: _core.Sampler,
    eos_ids: Sequence[int],
) -> Iterator[int]:
    """Yields sampled tokens after prompt until max_tokens, an end token, or a full context.

    The caller stops iterating early for stop strings. The end token itself is not yielded.
    """
    if params.max_tokens == 0:
        return
    n_ctx = int(slot.session.n_ctx)
    if len(prompt) > n_ctx:
        raise ShapeError(
            f"the prompt has {len(prompt)} tokens but the context holds {n_ctx}; shorten it or "
            "load the model with a larger n_ctx"
        )
    for t in prompt[-params.repeat_last_n :] if params.repeat_last_n else ():
        sampler.accept(t)
    logits = prefill(slot, prompt)
    eos = frozenset(eos_ids)
    for n in range(1, params.max_tokens + 1):
        token = sampler.sample(logits)
        if token in eos:
            return
        yield token
        sampler.accept(token)
        if n == params.max_tokens or int(slot.session.n_past) >= n_ctx:
            return  # the context is full: nothing more can be computed
        slot.tokens.append(token)
        logits = np.asarray(slot.session.decode(np.asarray([token], dtype=np.int32), False))
