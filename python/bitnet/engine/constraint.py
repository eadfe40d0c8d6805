"""Structured output: a token mask per step that keeps generated text inside a JSON schema.

The engine asks :func:`make_constraint` for a :class:`TokenConstraint` when a request has
``SamplingParams.json_schema`` set; before each sampling step it calls ``fill_mask`` and puts
-inf on the logits of disallowed tokens, then calls ``accept`` with the sampled token, and ends
the request ("stop") when ``is_finished`` says only end-of-sequence may follow.

The matching is done by llguidance (MIT, a Rust library shipped as a plain wheel with no
dependencies; docs/serving.md explains the choice, with measurements on our tokenizers). Its
tokenizer view is built from :class:`bitnet.tokenizer.Tokenizer` (every token's bytes, control
tokens marked special, the end-of-sequence ids) once per model and cached; each request compiles
its schema into a fresh matcher, which takes milliseconds, in :func:`make_constraint`, which the
engine calls at submit time, off its thread.

JSON is generated compactly and deterministically: no free whitespace (a model cannot pad
forever), ``", "`` between items and ``": "`` after keys, as OpenAI's models write it.

Thread safety: :func:`make_constraint` may be called from any thread. A constraint belongs to
one request and is used by one thread at a time.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from ..errors import ParameterError, UnsupportedError

if TYPE_CHECKING:
    from ..model import Model
    from ..tokenizer import Tokenizer

__all__ = [
    "JsonConstraint",
    "JsonVocabulary",
    "TokenConstraint",
    "make_constraint",
    "vocabulary",
]

log = logging.getLogger("bitnet.engine")

# How llguidance writes JSON (see the module docstring).
_JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


class TokenConstraint(Protocol):
    """What the engine needs from a structured-output matcher (docs: ENGINE_CONTRACT.md)."""

    def fill_mask(self, allowed: np.ndarray) -> None:
        """Writes into ``allowed`` (bool, shape (n_vocab,)) True where a token may come next."""

    def accept(self, token_id: int) -> None:
        """Advances with the sampled token."""

    def is_finished(self) -> bool:
        """Whether the text is complete: only end-of-sequence may follow."""


def _llguidance() -> Any:
    try:
        import llguidance
    except ImportError as e:
        raise UnsupportedError(
            "json_schema needs the llguidance package: pip install 'bitnet[server]' "
            "(or pip install llguidance)"
        ) from e
    return llguidance


class _TokenizerView:
    """Our tokenizer as llguidance's ``TokenizerWrapper`` expects it.

    ``tokens[i]`` are the bytes token i adds to text; control tokens (which add none) are
    ``0xFF`` followed by their name, llguidance's marker for special tokens. Calling the view
    tokenizes bytes so that the tokens' bytes are exactly the input: llguidance splits the
    text the grammar forces (keys, punctuation) with it and allows only that split, so a
    SentencePiece dummy-prefix space there would be text the grammar never allowed.
    """

    def __init__(self, tok: Tokenizer, n_vocab: int) -> None:
        n = max(tok.n_tokens, n_vocab)
        pieces = [tok.token_bytes(i) for i in range(n)]
        special = [i for i in range(n) if not pieces[i]]
        self._by_bytes: dict[bytes, int] = {}
        for i, p in enumerate(pieces):
            if p:
                self._by_bytes.setdefault(p, i)
        self._longest = max((len(p) for p in self._by_bytes), default=1)
        for i in special:
            pieces[i] = b"\xff" + (tok.token_text(i) or f"<unused_{i}>").encode()
        self._tok = tok
        # The attributes llguidance's TokenizerWrapper reads:
        self.eos_token_id = tok.eos_ids[0] if tok.eos_ids else None
        self.bos_token_id = tok.bos_id
        self.tokens = pieces
        self.special_token_ids = special

    def __call__(self, data: bytes | str) -> list[int]:
        raw = data.encode() if isinstance(data, str) else bytes(data)
        try:
            text = raw.decode()
        except UnicodeDecodeError:
            return self._greedy(raw)
        ids = self._tok.encode(text, special=False)
        if b"".join(self._tok.token_bytes(i) for i in ids) == raw:
            return ids
        # SentencePiece adds a dummy-prefix space to text that is a continuation here, and
        # splits it as a word start: the longest-match split is closer to what it does mid-word.
        return self._greedy(raw)

    def _greedy(self, raw: bytes) -> list[int]:
        """Longest-match tokens whose bytes are exactly raw (every byte is a token in byte-level
        BPE and in SentencePiece with byte fallback; a byte without a token is skipped)."""
        out: list[int] = []
        pos = 0
        while pos < len(raw):
            for n in range(min(self._longest, len(raw) - pos), 0, -1):
                token = self._by_bytes.get(raw[pos : pos + n])
                if token is not None:
                    out.append(token)
                    pos += n
                    break
            else:
                pos += 1
        return out


class JsonConstraint:
    """A :class:`TokenConstraint` for one request: llguidance's matcher over one JSON schema.

    It never raises on the engine thread (an exception there would fail every request): if the
    matcher fails (a token it refused, or a parser resource limit, which schemas validated at
    compile time do not reach in practice), it logs the error, allows only end-of-sequence and
    says it is finished, so that this one request ends; :attr:`error` keeps the reason.
    """

    def __init__(self, matcher: Any, n_words: int, eos_ids: tuple[int, ...]) -> None:
        self._matcher = matcher
        self._words = np.zeros(n_words, dtype=np.uint32)  # (ceil(n_tokens / 32),) mask bits
        self._eos_ids = eos_ids
        self.error: str | None = None

    def fill_mask(self, allowed: np.ndarray) -> None:
        """Writes True where a token may come next (shape (n_vocab,), bool)."""
        if self.error is None:
            self._matcher.unsafe_compute_mask_ptr(self._words.ctypes.data, self._words.nbytes)
            self._check()
        if self.error is not None:
            allowed[:] = False
            allowed[[i for i in self._eos_ids if i < allowed.shape[0]]] = True
            return
        bits = np.unpackbits(self._words.view(np.uint8), bitorder="little")
        n = min(allowed.shape[0], bits.shape[0])
        np.copyto(allowed[:n], bits[:n], casting="unsafe")
        allowed[n:] = False  # logits rows beyond the tokenizer's table

    def accept(self, token_id: int) -> None:
        """Advances with the sampled token (a refused token sets :attr:`error`)."""
        if self.error is None and not self._matcher.consume_token(int(token_id)):
            self._fail(f"token {token_id} was not allowed ({self._first_line()})")

    def is_finished(self) -> bool:
        """Whether the JSON value is complete (only end-of-sequence may follow), or the
        matcher failed."""
        return self.error is not None or bool(self._matcher.is_stopped())

    def is_accepting(self) -> bool:
        """Whether the text so far is a complete JSON value of the schema."""
        return self.error is None and bool(self._matcher.is_accepting())

    def _first_line(self) -> str:
        # llguidance appends its parser state and the grammar: the first line says what failed.
        return str(self._matcher.get_error()).strip().split("\n", 1)[0]

    def _check(self) -> None:
        if self._matcher.is_error():
            self._fail(self._first_line())

    def _fail(self, message: str) -> None:
        self.error = message
        log.warning("structured output failed, ending the request: %s", message)


class JsonVocabulary:
    """llguidance's view of one tokenizer, built once (about a second for 128k tokens) and
    shared by every request of the model; :meth:`constraint` compiles a schema.

    Args:
        tokenizer: The model's tokenizer.
        n_vocab: Rows of the model's logits (may exceed the tokenizer's table; extra rows are
            never allowed).
        where: What to name in errors (the model's path).

    Raises:
        UnsupportedError: llguidance is not installed, or the tokenizer has no EOS token.
    """

    def __init__(self, tokenizer: Tokenizer, n_vocab: int, *, where: str = "the model") -> None:
        llg = _llguidance()
        if not tokenizer.eos_ids:
            raise UnsupportedError(
                f"{where}: json_schema needs an end-of-sequence token, and the tokenizer "
                "declares none"
            )
        view = _TokenizerView(tokenizer, n_vocab)
        self.n_vocab = n_vocab
        self.eos_ids = tuple(tokenizer.eos_ids)
        self._llg = llg
        self._tokenizer = llg.LLTokenizer(
            llg.TokenizerWrapper(view), n_vocab=len(view.tokens), eos_token=list(self.eos_ids)
        )
        self._words = (len(view.tokens) + 31) // 32  # 32-bit words of a mask

    def compile(self, json_schema_text: str) -> str:
        """The llguidance grammar of a JSON schema, validated against this tokenizer.

        Raises:
            ParameterError: The schema is not a JSON object, or not one llguidance can enforce
                (the message says why; param "json_schema").
        """
        llg = self._llg
        try:
            grammar = llg.LLMatcher.grammar_from_json_schema(
                json_schema_text, overrides=_JSON_OPTIONS
            )
        except (ValueError, TypeError) as e:
            raise ParameterError("json_schema", f"json_schema is not a JSON object: {e}") from None
        is_error, messages = llg.LLMatcher.validate_grammar_with_warnings(grammar, self._tokenizer)
        if is_error:
            raise ParameterError(
                "json_schema", f"json_schema cannot be enforced: {'; '.join(messages)}"
            )
        return str(grammar)

    def constraint(self, json_schema_text: str) -> JsonConstraint:
        """A fresh matcher for one request (see :func:`make_constraint`)."""
        matcher = self._llg.LLMatcher(self._tokenizer, self.compile(json_schema_text), log_level=0)
        if matcher.is_error():
            error = str(matcher.get_error()).strip().split("\n", 1)[0]
            raise ParameterError("json_schema", f"json_schema cannot be enforced: {error}")
        return JsonConstraint(matcher, self._words, self.eos_ids)


_vocab_lock = threading.Lock()
_vocabularies: weakref.WeakKeyDictionary[Any, JsonVocabulary] = weakref.WeakKeyDictionary()
_building: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()


def vocabulary(model: Model) -> JsonVocabulary:
    """The model's :class:`JsonVocabulary`, built on first use and cached (servers call it at
    startup so that the first structured request does not pay for it).

    Raises:
        UnsupportedError: llguidance is not installed, or the tokenizer has no EOS token.
    """
    with _vocab_lock:
        found = _vocabularies.get(model)
        if found is not None:
            return found
        lock = _building.setdefault(model, threading.Lock())
    with lock:  # one build per model, even when requests arrive together
        with _vocab_lock:
            found = _vocabularies.get(model)
        if found is None:
            found = JsonVocabulary(model.tokenizer, model.n_vocab, where=model.path)
            with _vocab_lock:
                _vocabularies[model] = found
        return found


def make_constraint(model: Model, json_schema_text: str) -> JsonConstraint:
    """A fresh matcher that keeps a request's output inside a JSON schema.

    Args:
        model: The model whose tokens are masked (its tokenizer view is built on first use
            and cached).
        json_schema_text: A JSON schema as JSON text (``SamplingParams.json_schema``);
            ``{"type": "object"}`` allows any JSON object.

    Returns:
        A :class:`JsonConstraint` (a :class:`TokenConstraint`).

    Raises:
        ParameterError: The schema is invalid or uses what llguidance cannot enforce.
        UnsupportedError: llguidance is not installed, or the model has no EOS token.

    Example:
        >>> c = make_constraint(model, '{"type": "object"}')  # doctest: +SKIP
        >>> allowed = np.zeros(model.n_vocab, dtype=bool)  # doctest: +SKIP
        >>> c.fill_mask(allowed)  # only tokens that can start an object  # doctest: +SKIP
    """
    return vocabulary(model).constraint(json_schema_text)
