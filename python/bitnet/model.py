"""The Model class: a loaded GGUF model with its tokenizer, generation, chat and perplexity.

Thread safety: the weights are immutable and shared; every call borrows its own session (KV
cache) from a small pool (:class:`bitnet.generation.SessionPool`). One Model can therefore be
used from several threads at once: calls run in parallel (the forward pass releases the GIL)
and never corrupt each other's state. A later call whose prompt extends an earlier one (the
next turn of a chat) reuses that call's cache for the shared prefix.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from . import _core
from .chat import render_chat_template
from .errors import BitnetError, FormatError, ShapeError, UnsupportedError
from .generation import SamplingParams, SessionPool, TextStream, generate_tokens
from .tokenizer import Tokenizer, tokenizer_from_gguf

__all__ = ["Model", "load"]

Message = Mapping[str, Any]


class Model:
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
        n_batch: int = 256,
        n_threads: int | None = None,
        kv_cache: str = "f32",
        output_type: str = "auto",
        isa: str | None = None,
        kernel: str | None = None,
    ) -> None:
        self.path = os.fspath(path)
        if n_threads is not None and not 1 <= n_threads <= 1024:
            raise ShapeError(f"n_threads must be between 1 and 1024, got {n_threads}")
        if kv_cache not in ("f32", "f16"):
            raise ShapeError(f"kv_cache must be 'f32' or 'f16', got {kv_cache!r}")
        p = Path(self.path)
        if p.is_dir():
            hint = " (a Hugging Face checkpoint: convert it with `bitnet convert`)"
            raise FormatError(
                f"{self.path}: is a directory, not a GGUF file"
                + (hint if (p / "config.json").is_file() else "")
            )
        if not p.exists():
            raise FileNotFoundError(f"{self.path}: no such file")
        self._core = _core.Model(self.path, output_type, isa or "", kernel or "")
        self._pool: SessionPool | None = SessionPool(
            self._core, n_ctx, n_batch, n_threads=n_threads or 0, kv_f16=kv_cache == "f16"
        )
        self._n_ctx = self._pool.n_ctx
        self._tokenizer: Tokenizer | None = None

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
    def kernels(self) -> dict[str, Any]:
        """Which kernels run this model: the ISA and the family of each BitLinear weight."""
        families: dict[str, int] = {}
        for info in self._core.linear_info():
            families[info["kernel"]] = families.get(info["kernel"], 0) + 1
        return {"isa": self._core.kernel_isa, "linear": families, "output": self.output_type}

    @property
    def metadata(self) -> Any:
        """The GGUF file (``get(key)``, ``keys()``, ``tensors()``)."""
        return self._core.file

    @property
    def tokenizer(self) -> Tokenizer:
        """The model's tokenizer, rebuilt from the file on first use."""
        if self._tokenizer is None:
            self._tokenizer = tokenizer_from_gguf(self._core.file)
        return self._tokenizer

    @property
    def chat_template(self) -> str | None:
        """The Jinja2 chat template stored in the file (``tokenizer.chat_template``), if any."""
        value = self._core.file.get("tokenizer.chat_template")
        return value if isinstance(value, str) and value else None

    def _live_pool(self) -> SessionPool:
        if self._pool is None:
            raise BitnetError(f"{self.path}: the model has been closed")
        return self._pool

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
        tok = self.tokenizer
        ids = tok.encode(text, special=special)
        bos = tok.bos_id
        wanted = tok.add_bos if add_bos is None else add_bos
        if wanted and bos is not None and (not ids or ids[0] != bos):
            ids.insert(0, bos)
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
        pool = self._live_pool()
        slot = pool.acquire()
        try:
            slot.session.truncate(0)
            slot.tokens.clear()
            slot.tokens.extend(int(i) for i in ids)
            return np.asarray(slot.session.decode(ids.astype(np.int32), True))
        finally:
            pool.release(slot)

    def generate(
        self,
        prompt: str,
        *,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> str:
        """Continues a prompt.

        Generation ends after max_tokens tokens, at an end-of-sequence or end-of-turn token, at
        the first stop string (which is not included), or when the context is full.

        Args:
            prompt: The text to continue. Special-token text in it is read as special tokens;
                the BOS token is added when the model asks for it.
            max_tokens: Most tokens to generate.
            temperature: Divides the logits; 0 means greedy (always the likeliest token).
            top_k: Sample among the k likeliest tokens (0: all).
            top_p: Sample among the likeliest tokens whose probabilities add up to top_p
                (1: all).
            min_p: Drop tokens less likely than min_p times the likeliest one (0: none).
            repeat_penalty: Penalty for tokens among the last repeat_last_n (1: none): a
                positive logit is divided by it, a negative one multiplied.
            repeat_last_n: How many recent tokens (prompt included) the penalty looks at.
            seed: Seed of the random generator: the same seed gives the same text. None draws
                a fresh one.
            stop: Strings that end generation, even when they span several tokens.

        Returns:
            The generated text.

        Raises:
            ShapeError: The prompt is longer than the context.
            ValueError: An option is out of range.

        Example:
            >>> model.generate("1, 2, 3,", max_tokens=8, temperature=0, stop=["6"])  # doctest: +SKIP
            ' 4, 5, '
        """
        return "".join(
            self.stream(
                prompt,
                max_tokens=max_tokens,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                min_p=min_p,
                repeat_penalty=repeat_penalty,
                repeat_last_n=repeat_last_n,
                seed=seed,
                stop=stop,
            )
        )

    def stream(
        self,
        prompt: str,
        *,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        seed: int | None = None,
        stop: Sequence[str] = (),
    ) -> Iterator[str]:
        """Continues a prompt, yielding text as it is generated.

        The pieces joined are exactly what :meth:`generate` returns with the same options and
        seed. Every piece is valid text: a character whose bytes span several tokens comes out
        whole, and text that may begin a stop string is held back until it is clear. Stopping
        the iteration early (``break``, Ctrl-C) ends generation and leaves the model usable.

        Args:
            prompt: The text to continue.
            max_tokens: See :meth:`generate` for this and every other option.
            temperature: See :meth:`generate`.
            top_k: See :meth:`generate`.
            top_p: See :meth:`generate`.
            min_p: See :meth:`generate`.
            repeat_penalty: See :meth:`generate`.
            repeat_last_n: See :meth:`generate`.
            seed: See :meth:`generate`.
            stop: See :meth:`generate`.

        Yields:
            Pieces of generated text.

        Example:
            >>> for piece in model.stream("Once upon a time", max_tokens=32):  # doctest: +SKIP
            ...     print(piece, end="", flush=True)
        """
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            min_p=min_p,
            repeat_penalty=repeat_penalty,
            repeat_last_n=repeat_last_n,
            seed=seed,
            stop=stop,
        )
        return self._stream_ids(self._prompt_ids(prompt), params, strip_leading_space=False)

    def _prompt_ids(self, text: str) -> list[int]:
        ids = self.tokenize(text)
        if not ids:
            raise ShapeError("the prompt is empty and the model adds no BOS token")
        return ids

    def _stream_ids(
        self, ids: list[int], params: SamplingParams, *, strip_leading_space: bool
    ) -> Iterator[str]:
        # Everything that can fail on bad input fails here, before the first next().
        pool = self._live_pool()
        if len(ids) > pool.n_ctx:
            raise ShapeError(
                f"the prompt has {len(ids)} tokens but the context holds {pool.n_ctx}; shorten "
                "it or load the model with a larger n_ctx"
            )
        sampler = params.sampler(self.n_vocab)
        tokenizer = self.tokenizer
        return self._run(pool, ids, params, sampler, tokenizer, strip_leading_space)

    @staticmethod
    def _run(
        pool: SessionPool,
        ids: list[int],
        params: SamplingParams,
        sampler: _core.Sampler,
        tokenizer: Tokenizer,
        strip_leading_space: bool,
    ) -> Iterator[str]:
        slot = pool.acquire(ids)
        try:
            text = TextStream(params.stop, strip_leading_space=strip_leading_space)
            for token in generate_tokens(slot, ids, params, sampler, tokenizer.eos_ids):
                piece = text.push(tokenizer.token_bytes(token))
                if piece:
                    yield piece
                if text.stopped:
                    return
            tail = text.flush()
            if tail:
                yield tail
        finally:
            pool.release(slot)

    # -- chat -----------------------------------------------------------------------------
    def apply_chat_template(
        self,
        messages: Sequence[Message],
        *,
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
    ) -> str:
        """The prompt text for a conversation, rendered with the model's chat template.

        Args:
            messages: Dicts with "role" ("system", "user", "assistant") and "content".
            add_generation_prompt: End with the text that opens the assistant's turn.
            chat_template: A Jinja2 template to use instead of the model's own.

        Raises:
            UnsupportedError: The model has no chat template and none was given.
            TemplateError: The template fails or rejects the messages.

        Example:
            >>> model.apply_chat_template([{"role": "user", "content": "Hi"}])  # doctest: +SKIP
            '<|begin_of_text|>User: Hi<|eot_id|>Assistant: '
        """
        template = chat_template or self.chat_template
        if template is None:
            raise UnsupportedError(
                f"{self.path}: the model has no chat template (tokenizer.chat_template); pass "
                "chat_template=... or use generate()"
            )
        tok = self.tokenizer
        return render_chat_template(
            template,
            messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=tok.token_text(tok.bos_id) if tok.bos_id is not None else "",
            eos_token=tok.token_text(tok.eos_ids[0]) if tok.eos_ids else "",
        )

    def chat(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        seed: int | None = None,
        stop: Sequence[str] = (),
        chat_template: str | None = None,
    ) -> str:
        """The assistant's reply to a conversation.

        The conversation is rendered with the model's chat template and the reply ends at the
        model's end-of-turn token. Calling again with the reply and a new user message appended
        reuses the cached computation of everything before.

        Args:
            messages: Dicts with "role" and "content", oldest first.
            max_tokens: See :meth:`generate` for this and the sampling options.
            temperature: See :meth:`generate`.
            top_k: See :meth:`generate`.
            top_p: See :meth:`generate`.
            min_p: See :meth:`generate`.
            repeat_penalty: See :meth:`generate`.
            repeat_last_n: See :meth:`generate`.
            seed: See :meth:`generate`.
            stop: See :meth:`generate`.
            chat_template: A Jinja2 template to use instead of the model's own.

        Returns:
            The reply text.

        Example:
            >>> history = [{"role": "user", "content": "Name a colour."}]  # doctest: +SKIP
            >>> reply = model.chat(history, seed=0)  # doctest: +SKIP
            >>> history += [{"role": "assistant", "content": reply},
            ...             {"role": "user", "content": "Another?"}]  # doctest: +SKIP
            >>> model.chat(history, seed=0)  # doctest: +SKIP
        """
        return "".join(
            self.chat_stream(
                messages,
                max_tokens=max_tokens,
                temperature=temperature,
                top_k=top_k,
                top_p=top_p,
                min_p=min_p,
                repeat_penalty=repeat_penalty,
                repeat_last_n=repeat_last_n,
                seed=seed,
                stop=stop,
                chat_template=chat_template,
            )
        )

    def chat_stream(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        min_p: float = 0.05,
        repeat_penalty: float = 1.0,
        repeat_last_n: int = 64,
        seed: int | None = None,
        stop: Sequence[str] = (),
        chat_template: str | None = None,
    ) -> Iterator[str]:
        """The assistant's reply to a conversation, yielded as it is generated.

        Args:
            messages: See :meth:`chat` for this and chat_template.
            max_tokens: See :meth:`generate` for this and the sampling options.
            temperature: See :meth:`generate`.
            top_k: See :meth:`generate`.
            top_p: See :meth:`generate`.
            min_p: See :meth:`generate`.
            repeat_penalty: See :meth:`generate`.
            repeat_last_n: See :meth:`generate`.
            seed: See :meth:`generate`.
            stop: See :meth:`generate`.
            chat_template: See :meth:`chat`.

        Yields:
            Pieces of the reply.
        """
        params = SamplingParams(
            max_tokens=max_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            min_p=min_p,
            repeat_penalty=repeat_penalty,
            repeat_last_n=repeat_last_n,
            seed=seed,
            stop=stop,
        )
        prompt = self.apply_chat_template(messages, chat_template=chat_template)
        return self._stream_ids(
            self._prompt_ids(prompt),
            params,
            strip_leading_space=self.tokenizer.strip_leading_space,
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
            window: Tokens per window or chunk (0: the model's context).
            stride: Tokens between window starts (0: half a window); sliding method only.
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
        from .eval.perplexity import perplexity

        return perplexity(
            self, text, method=method, window=window, stride=stride, progress=progress
        ).ppl

    # -- lifetime -------------------------------------------------------------------------
    def close(self) -> None:
        """Releases the KV caches (the weights go when the last reference does)."""
        if self._pool is not None:
            self._pool.close()
        self._pool = None

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
    n_batch: int = 256,
    n_threads: int | None = None,
    kv_cache: str = "f32",
    output_type: str = "auto",
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
        n_ctx: Context length to allocate (0: the model's training context).
        n_batch: Most tokens per forward pass when processing a prompt.
        n_threads: Threads of each forward pass (None: every hardware thread).
        kv_cache: ``"f32"`` or ``"f16"`` (half the KV-cache memory; attention math stays float).
        output_type: The output layer: ``"auto"`` (int8 where the hidden size allows it),
            ``"q8_0"`` (int8 blocks of 32, like ggml's Q8_0: a quarter of f32's bytes, logits
            within about 1% of exact) or ``"f32"`` (exact float products of the file's values).
        isa: Kernel instruction set (``"ref"``, ``"avx2"``, ``"neon"``, ``"dotprod"``; None:
            the best this CPU has, or ``BITNET_ISA``). For comparisons and debugging.
        kernel: Ternary matrix-product family, ``"mad"`` (multiply-add) or ``"lut"`` (lookup
            tables); None: ``BITNET_KERNEL`` or the measured choice for this CPU.
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

    name = os.fspath(path)
    if hub.is_hub_name(name):
        name = os.fspath(hub.resolve(name, revision=revision, progress=progress))
    elif revision is not None:
        raise ValueError(f"revision= applies to hub models, but {name!r} is a local path")
    return Model(
        name,
        n_ctx=n_ctx,
        n_batch=n_batch,
        n_threads=n_threads,
        kv_cache=kv_cache,
        output_type=output_type,
        isa=isa,
        kernel=kernel,
    )
