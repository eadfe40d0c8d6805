"""The Model class: a loaded GGUF model with its tokenizer, generation, chat and perplexity.

Thread safety: the weights are immutable and shared. Generation (``generate``, ``stream``,
``complete``, ``chat``, ``submit``, ``generate_batch``; :mod:`bitnet.completions`) runs on the
model's engine (:mod:`bitnet.engine`): one engine thread advances every request together, so
calls from many threads at once are batched into the same forward passes. ``logits`` and
``perplexity`` borrow a private session (KV cache) per call and run in parallel.
"""

from __future__ import annotations

import contextlib
import os
import threading
import weakref
from collections.abc import Sequence
from types import TracebackType
from typing import Any

import numpy as np

from . import _core
from .chat import DEFAULT_CHAT_TEMPLATE, render_chat_template
from .checks import (
    check_load_options,
    check_memory,
    check_model_path,
    check_token_ids,
    model_path,
)
from .completions import GenerationMixin, Message
from .engine import Engine
from .errors import (
    BitnetError,
    ContextLengthError,
    ParameterError,
    UnsupportedError,
)
from .sessions import SessionPool
from .tokenizer import Tokenizer, check_text, tokenizer_from_gguf

__all__ = ["Model", "load"]


class Model(GenerationMixin):
    """A BitNet model loaded from a GGUF file.

    Example:
        >>> model = bitnet.load("model.gguf")  # doctest: +SKIP
        >>> model.generate("The capital of France is", max_tokens=8, temperature=0)  # doctest: +SKIP
        ' Paris. It is the largest city'
        >>> for piece in model.stream("Once upon a time", seed=1):  # doctest: +SKIP
        ...     print(piece, end="", flush=True)
        >>> model.chat([{"role": "user", "content": "Hi!"}])  # doctest: +SKIP
        'Hello! How can I help you today?'
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        n_ctx: int = 0,
        n_batch: int = 512,
        n_threads: int | None = None,
        kv_cache: str = "f16",
        n_parallel: int = 4,
        kv_budget: int | None = None,
        max_queue: int = 64,
        output_type: str = "auto",
        exact_topk: bool = False,
        isa: str | None = None,
        kernel: str | None = None,
    ) -> None:
        self.path = model_path(path)
        check_load_options(
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_threads=n_threads,
            kv_cache=kv_cache,
            n_parallel=n_parallel,
            kv_budget=kv_budget,
            max_queue=max_queue,
            output_type=output_type,
            isa=isa,
            kernel=kernel,
            exact_topk=exact_topk,
        )
        check_model_path(self.path)
        # The OS's bytes of the path: a str with surrogates (undecodable bytes) cannot cross.
        self._core = _core.Model(
            os.fsencode(self.path), output_type, isa or "", kernel or "", exact_topk
        )
        head_dim = int(self._core.config["head_dim"])
        if kv_cache == "q8_0" and head_dim % 32:
            raise UnsupportedError(
                f"{self.path}: kv_cache='q8_0' needs head_dim to be a multiple of 32, but the "
                f"model's head_dim is {head_dim}; use 'f16'"
            )
        check_memory(
            self._core.config,
            path=self.path,
            n_ctx=n_ctx,
            n_batch=n_batch,
            kv_cache=kv_cache,
            n_threads=n_threads or os.cpu_count() or 1,
            n_parallel=n_parallel,
            kv_budget=kv_budget,
        )
        self._pool: SessionPool | None = SessionPool(
            self._core, n_ctx, n_batch, n_threads=n_threads or 0, kv_cache=kv_cache
        )
        self._n_ctx = self._pool.n_ctx
        self._n_batch = min(n_batch, self._n_ctx)
        if kv_budget is not None and kv_budget < self._n_ctx:
            raise ParameterError(
                "kv_budget",
                f"kv_budget ({kv_budget} tokens) must hold at least one full context "
                f"(n_ctx = {self._n_ctx})",
            )
        self._engine_options: dict[str, Any] = {
            "n_ctx": self._n_ctx,
            "n_batch": n_batch,
            "n_threads": n_threads or 0,
            "n_parallel": n_parallel,
            "kv_budget": kv_budget,
            "max_queue": max_queue,
            "kv_cache": kv_cache,
        }
        self.kv_cache = kv_cache
        self._engine: Engine | None = None
        self._engine_lock = threading.Lock()
        self._tokenizer: Tokenizer | None = None
        # A malformed tokenizer fails the load; a missing one fails when first needed.
        with contextlib.suppress(UnsupportedError):
            self._tokenizer = tokenizer_from_gguf(self._core.file, self.n_vocab)

    # -- metadata -------------------------------------------------------------------------
    @property
    def config(self) -> dict[str, Any]:
        """Hyperparameters: arch, n_vocab, n_embd, n_layers, n_heads, ... (see ``bitnet info``)."""
        return dict(self._core.config)

    @property
    def n_vocab(self) -> int:
        """Rows of the output layer (logits per token)."""
        return int(self._core.config["n_vocab"])

    @property
    def n_ctx(self) -> int:
        """The most tokens one sequence (prompt plus generated text) can hold."""
        return self._n_ctx

    @property
    def n_threads(self) -> int:
        """Threads each forward pass runs on."""
        return self._live_pool().n_threads

    @property
    def output_type(self) -> str:
        """How the output layer is computed: ``"q8_0"`` (int8, the default) or ``"f32"``."""
        return str(self._core.output_type)

    @property
    def exact_topk(self) -> bool:
        """Whether the exact-top-k pre-pass of the output layer was built (``exact_topk=True``):
        requests that need only the largest logits then read about half of the output layer's
        bytes (docs/kernels.md, "Exact top-k")."""
        return bool(self._core.topk_prepass)

    @property
    def kernels(self) -> dict[str, Any]:
        """Which kernels run this model: the ISA, the family of each BitLinear weight, the output
        layer (``"q8_0"`` or ``"f32"``) and whether its exact-top-k pre-pass is built."""
        families: dict[str, int] = {}
        for info in self._core.linear_info():
            families[info["kernel"]] = families.get(info["kernel"], 0) + 1
        return {
            "isa": self._core.kernel_isa,
            "linear": families,
            "output": self.output_type,
            "exact_topk": self.exact_topk,
        }

    @property
    def metadata(self) -> Any:
        """The GGUF file (``get(key)``, ``keys()``, ``tensors()``)."""
        return self._core.file

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer, rebuilt from the file on first use."""
        if self._tokenizer is None:
            self._tokenizer = tokenizer_from_gguf(self._core.file, self.n_vocab)
        return self._tokenizer

    @property
    def chat_template(self) -> str | None:
        """The Jinja2 chat template stored in the file (``tokenizer.chat_template``), if any."""
        value = self._core.file.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value else None

    @property
    def chat_template_is_default(self) -> bool:
        """True when the file has no chat template, so that chats use
        :data:`bitnet.chat.DEFAULT_CHAT_TEMPLATE` (and end replies at its
        :data:`~bitnet.chat.DEFAULT_CHAT_STOP` strings)."""
        return self.chat_template is None

    def _live_pool(self) -> SessionPool:
        if self._pool is None:
            raise BitnetError(f"{self.path}: the model has been closed")
        return self._pool

    @property
    def engine(self) -> Engine:
        """The continuous-batching engine every generation runs on (made on first use).

        It runs up to n_parallel sequences at once within the kv_budget, queues up to
        max_queue more, and is shared by every thread using this model.
        """
        engine = self._engine
        if engine is not None:
            return engine
        with self._engine_lock:
            self._live_pool()  # not after close()
            if self._engine is None:
                self._engine = Engine(self, **self._engine_options)
                weakref.finalize(self, self._engine.close)
            return self._engine

    # -- text <-> ids ---------------------------------------------------------------------
    def tokenize(
        self, text: str, *, add_bos: bool | None = None, special: bool = True
    ) -> list[int]:
        """Token ids of text.

        Args:
            text: Any string.
            add_bos: Start with the BOS token; None follows the model (add_bos_token). No second
                BOS is added when the text already starts with one.
            special: Read special-token text such as ``"<|eot_id|>"`` as that token (as chat
                templates need); False reads it as plain text.
        """
        check_text(text, "text")
        if add_bos is not None and not isinstance(add_bos, bool):
            raise ParameterError("add_bos", f"add_bos must be True, False or None, got {add_bos!r}")
        if not isinstance(special, bool):
            raise ParameterError("special", f"special must be True or False, got {special!r}")
        tok = self.tokenizer
        ids = tok.encode(text, special=special)
        bos = tok.bos_id
        wanted = tok.add_bos if add_bos is None else add_bos
        if wanted and bos is not None and (not ids or ids[0] != bos):
            ids.insert(0, bos)
        return ids

    def detokenize(self, ids: Sequence[int]) -> str:
        """Text of token ids (integers in [0, n_vocab))."""
        checked = check_token_ids(ids, self.n_vocab, "ids", allow_empty=True)
        return self.tokenizer.decode(checked.tolist())

    # -- computation ----------------------------------------------------------------------
    def logits(self, token_ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """Logits (len(token_ids), n_vocab) float32 of a sequence evaluated from position 0.

        The sequence is run n_batch tokens at a time, so Ctrl-C interrupts a long one between
        two batches.

        Raises:
            ParameterError: token_ids is empty, not integers, or holds an id outside
                [0, n_vocab).
            ContextLengthError: token_ids is longer than the context.
        """
        ids = check_token_ids(token_ids, self.n_vocab, "token_ids")
        pool = self._live_pool()
        if len(ids) > pool.n_ctx:
            raise ContextLengthError(
                len(ids),
                pool.n_ctx,
                f"token_ids has {len(ids)} tokens but the context holds {pool.n_ctx}",
            )
        session = pool.acquire()
        try:
            out = np.empty((len(ids), self.n_vocab), dtype=np.float32)
            step = self._n_batch
            for start in range(0, len(ids), step):  # signals are handled between chunks
                chunk = ids[start : start + step]
                out[start : start + len(chunk)] = session.decode(chunk, True)
            return out
        finally:
            pool.release(session)

    # -- chat -----------------------------------------------------------------------------
    def apply_chat_template(
        self,
        messages: Sequence[Message],
        *,
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
    ) -> str:
        """The prompt text for a conversation, rendered with the model's chat template.

        A model without a template of its own uses :data:`bitnet.chat.DEFAULT_CHAT_TEMPLATE`
        (see :attr:`chat_template_is_default`).

        Args:
            messages: Dicts with "role" ("system", "user", "assistant") and "content".
            add_generation_prompt: End with the text that opens the assistant's turn.
            chat_template: A Jinja2 template to use instead of the model's own.

        Raises:
            TemplateError: The template fails or rejects the messages.

        Example:
            >>> model.apply_chat_template([{"role": "user", "content": "Hi"}])  # doctest: +SKIP
            '<|begin_of_text|>User: Hi<|eot_id|>Assistant: '
        """
        template = chat_template or self.chat_template or DEFAULT_CHAT_TEMPLATE
        tok = self.tokenizer
        return render_chat_template(
            template,
            messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=tok.token_text(tok.bos_id) if tok.bos_id is not None else "",
            eos_token=tok.token_text(tok.eos_ids[0]) if tok.eos_ids else "",
        )

    # -- evaluation -----------------------------------------------------------------------
    def perplexity(
        self,
        text: str,
        *,
        window: int = 0,
        stride: int = 0,
        progress: bool = False,
        method: str = "sliding",
    ) -> float:
        """Perplexity of the model on text (:mod:`bitnet.eval.perplexity` describes both methods).

        ``"sliding"``: the text is tokenized once (with BOS when the model uses one). Windows
        of `window` tokens start every `stride` tokens; each token is scored once, by the first
        window that reaches it, with the context that window gives it (at least window - stride
        tokens after the first window). ``"llama.cpp"``: llama-perplexity's method,
        non-overlapping chunks of `window` tokens with the second half of each scored, for
        numbers comparable with llama.cpp (use its ``-c`` as window; it needs 2 * window
        tokens). Lower is better; compare conversions and options on the same text.

        Args:
            text: The evaluation text (at least two tokens).
            window: Tokens per window or chunk (0, or more than the context: the model's
                context).
            stride: Tokens between window starts, at most a window (0: half a window); sliding
                method only.
            progress: Show a progress bar.
            method: ``"sliding"`` or ``"llama.cpp"``.

        Returns:
            exp(mean negative log-likelihood) over the scored tokens. For the sliding method,
            every token but the first (with stride == window, also the first token of each
            window). :func:`bitnet.eval.perplexity` returns the details (NLL sum, uncertainty,
            running values).

        Example:
            >>> model.perplexity(open("wiki.test.raw").read(), window=512)  # doctest: +SKIP
            12.7
        """
        for name, value in (("window", window), ("stride", stride)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ParameterError(name, f"{name} must be an integer >= 0, got {value!r}")
        if not isinstance(progress, bool):
            raise ParameterError("progress", f"progress must be True or False, got {progress!r}")
        check_text(text, "text")
        from .eval.perplexity import perplexity

        return perplexity(
            self, text, method=method, window=window, stride=stride, progress=progress
        ).ppl

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Stops the engine (cancelling what still runs) and releases the KV caches; the
        weights go when the last reference does. Idempotent."""
        with self._engine_lock:
            engine, self._engine = self._engine, None
            if self._pool is not None:
                self._pool.close()
            self._pool = None
        if engine is not None:
            engine.close()

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


def load(
    path: str | os.PathLike[str],
    *,
    n_ctx: int = 0,
    n_batch: int = 512,
    n_threads: int | None = None,
    kv_cache: str = "f16",
    n_parallel: int = 4,
    kv_budget: int | None = None,
    max_queue: int = 64,
    output_type: str = "auto",
    exact_topk: bool = False,
    isa: str | None = None,
    kernel: str | None = None,
    revision: str | None = None,
    progress: bool = True,
) -> Model:
    """Loads a model from a GGUF file or the Hugging Face hub.

    Args:
        path: A .gguf file (written by ``bitnet convert``, llama.cpp's TQ1_0/TQ2_0 or
            bitnet.cpp's I2_S), a hub repository ("microsoft/bitnet-b1.58-2B-4T"; GGUF
            repositories load directly, others are downloaded and converted once), or a short
            name from ``bitnet models`` ("bitnet-2b4t").
        n_ctx: Most tokens one sequence holds, prompt plus generated text (0: the model's
            training context).
        n_batch: Most tokens per forward pass (one engine step: the decodes of every running
            sequence plus chunks of prompts; at least n_parallel).
        n_threads: Threads of each forward pass (None: the physical cores this process may
            run on, SMT siblings counted once, as llama.cpp does).
        kv_cache: KV-cache storage: ``"f16"`` (the default: half of f32's memory),
            ``"q8_0"`` (int8 blocks of 32 with a scale, like llama.cpp's ``--cache-type-k
            q8_0``: about a quarter) or ``"f32"``. Attention math stays float.
        n_parallel: Most sequences the engine advances at once (requests beyond it wait).
        kv_budget: KV-cache positions shared by all sequences and the prefix cache (None:
            n_parallel * n_ctx; at least n_ctx). Memory is reserved and only touched as used.
        max_queue: Most requests waiting for a slot; beyond it submitting raises
            QueueFullError.
        output_type: The output layer: ``"auto"`` (int8 where the hidden size allows it),
            ``"q8_0"`` (int8 blocks of 32, like ggml's Q8_0: a quarter of f32's bytes, logits
            within about 1% of exact) or ``"f32"`` (exact float products of the file's values).
        exact_topk: Also build a 4-bit pre-pass of the q8_0 output layer with per-row error
            bounds (docs/kernels.md, "Exact top-k"; a third more memory for the output layer).
            Requests that need only the largest logits (greedy, or top_k > 0 without logprobs)
            then read about 4.5 bits per output weight instead of 9, and recompute exactly only
            the rows that can reach their top_k: the tokens they get are identical to the
            q8_0 path's. Other requests use the full layer. Pays on trained models (confident
            predictions); on random weights almost every row is recomputed and it costs more.
        isa: Kernel instruction set (``"ref"``, ``"avx2"``, ``"avx512"``, ``"avx512vnni"``,
            ``"avx512vbmi"``, ``"neon"``, ``"dotprod"``; None: the best this CPU has, or
            ``BITNET_ISA``). For comparisons and debugging.
        kernel: Ternary matrix-product family, ``"mad"`` (multiply-add on 2-bit codes),
            ``"lut"`` (lookup tables) or ``"t3"`` (1.67 bits per weight, avx512vbmi only); None:
            ``BITNET_KERNEL`` or the measured choice for this CPU.
        revision: Hub branch, tag or commit (hub names only).
        progress: Show progress bars for downloads and conversion (hub names only).

    Raises:
        FileNotFoundError: A local path that does not exist.
        HubError: A hub model that cannot be downloaded, or is not cached when offline.
        FormatError: The file is not a valid model (names the problem).
        UnsupportedError: The model uses something bitnet does not implement.

    Example:
        >>> model = bitnet.load("microsoft/bitnet-b1.58-2B-4T-gguf")  # doctest: +SKIP
    """
    from . import hub

    name = model_path(path)
    if hub.is_hub_name(name):
        name = os.fspath(hub.resolve(name, revision=revision, progress=progress))
    elif revision is not None:
        raise ParameterError(
            "revision", f"revision= applies to hub models, but {name!r} is a local path"
        )
    return Model(
        name,
        n_ctx=n_ctx,
        n_batch=n_batch,
        n_threads=n_threads,
        kv_cache=kv_cache,
        n_parallel=n_parallel,
        kv_budget=kv_budget,
        max_queue=max_queue,
        output_type=output_type,
        exact_topk=exact_topk,
        isa=isa,
        kernel=kernel,
    )
