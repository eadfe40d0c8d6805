"""The Model class: a loaded GGUF model with its tokenizer and one KV-cache session."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from . import _core
from .errors import BitnetError, ShapeError
from .tokenizer import Tokenizer, tokenizer_from_gguf

__all__ = ["Model", "load"]


class Model:
    """A BitNet model loaded from a GGUF file.

    The weights are shared and immutable; the model owns one session (KV cache). Calls are
    serialized by a lock, so one Model may be used from several threads (one call at a time).

    Example:
        >>> model = bitnet.load("model.gguf")  # doctest: +SKIP
        >>> model.generate("The capital of France is", max_tokens=8)  # doctest: +SKIP
    """

    def __init__(self, path: str | os.PathLike[str], *, n_ctx: int = 0, n_batch: int = 256) -> None:
        self.path = os.fspath(path)
        if not Path(self.path).exists():
            raise FileNotFoundError(f"{self.path}: no such file")
        self._core = _core.Model(self.path)
        self._session: _core.Session | None = _core.Session(self._core, n_ctx, n_batch)
        self._lock = threading.Lock()
        self._tokenizer: Tokenizer | None = None

    # -- metadata -------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """Hyperparameters: arch, n_vocab, n_embd, n_layers, n_heads, ... (see ``bitnet info``)."""
        return dict(self._core.config)

    @property
    def n_vocab(self) -> int:
        return int(self._core.config["n_vocab"])

    @property
    def n_ctx(self) -> int:
        """The most tokens one sequence can hold."""
        return int(self._live_session().n_ctx)

    def _live_session(self) -> _core.Session:
        if self._session is None:
            raise BitnetError(f"{self.path}: the model has been closed")
        return self._session

    @property
    def metadata(self) -> Any:
        """The GGUF file (``get(key)``, ``keys()``, ``tensors()``)."""
        return self._core.file

    @property
    def tokenizer(self) -> Tokenizer:
        if self._tokenizer is None:
            self._tokenizer = tokenizer_from_gguf(self._core.file)
        return self._tokenizer

    # -- text <-> ids ---------------------------------------------------------------------
    def tokenize(self, text: str, *, add_bos: bool | None = None) -> list[int]:
        """Token ids of text. add_bos=None follows the model (tokenizer.ggml.add_bos_token)."""
        tok = self.tokenizer
        ids = tok.encode(text)
        if (tok.add_bos if add_bos is None else add_bos) and tok.bos_id is not None:
            ids.insert(0, tok.bos_id)
        return ids

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of token ids."""
        return self.tokenizer.decode(ids)

    # -- computation ----------------------------------------------------------------------
    def logits(self, token_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Logits (len(token_ids), n_vocab) float32 of a sequence evaluated from position 0."""
        ids = np.asarray(token_ids, dtype=np.int64)
        if ids.ndim != 1 or ids.size == 0:
            raise ShapeError("token_ids must be a non-empty 1-D sequence of token ids")
        if ids.min() < 0 or ids.max() >= self.n_vocab:
            raise ShapeError(f"token ids must be in [0, {self.n_vocab})")
        with self._lock:
            session = self._live_session()
            session.truncate(0)
            return np.asarray(session.decode(ids.astype(np.int32), True))

    def generate(self, prompt: str, *, max_tokens: int = 128) -> str:
        """Greedy continuation of prompt, up to max_tokens tokens or an end-of-sequence token."""
        if max_tokens < 0:
            raise ValueError("max_tokens must be non-negative")
        ids = self.tokenize(prompt)
        if not ids:
            raise ShapeError("the prompt is empty and the model adds no BOS token")
        if len(ids) >= self.n_ctx:
            raise ShapeError(f"the prompt has {len(ids)} tokens; the context holds {self.n_ctx}")
        eos = set(self.tokenizer.eos_ids)
        out: list[int] = []
        with self._lock:
            session = self._live_session()
            session.truncate(0)
            logits = session.decode(np.asarray(ids, dtype=np.int32), False)
            for _ in range(min(max_tokens, self.n_ctx - len(ids))):
                nxt = int(np.argmax(logits))
                if nxt in eos:
                    break
                out.append(nxt)
                if len(out) == max_tokens or session.n_past >= session.n_ctx:
                    break
                logits = session.decode(np.asarray([nxt], dtype=np.int32), False)
        return self.detokenize(out)

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Releases the KV cache (the weights go when the last reference does)."""
        with self._lock:
            self._session = None

    def __enter__(self) -> Model:  # noqa: PYI034 (typing.Self needs Python 3.11)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        c = self._core.config
        return (
            f"Model({self.path!r}, arch={c['arch']}, layers={c['n_layers']}, "
            f"embd={c['n_embd']}, vocab={c['n_vocab']})"
        )


def load(path: str | os.PathLike[str], *, n_ctx: int = 0, n_batch: int = 256) -> Model:
    """Loads a GGUF model file.

    Args:
        path: A .gguf file written by ``bitnet convert``, llama.cpp (TQ1_0/TQ2_0) or bitnet.cpp
            (I2_S).
        n_ctx: Context length to allocate (0: the model's training context).
        n_batch: Most tokens per forward pass when processing a prompt.

    Raises:
        FormatError: The file is not a valid model (names the problem).
        UnsupportedError: The model uses something bitnet does not implement.
    """
    return Model(path, n_ctx=n_ctx, n_batch=n_batch)
