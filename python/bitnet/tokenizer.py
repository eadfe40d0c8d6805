"""Tokenizers rebuilt from what a GGUF file holds, run by the reference libraries.

Three sources, tried in this order:

1. ``tokenizer.huggingface.json``: the original tokenizer.json, embedded by ``bitnet convert``
   for byte-level BPE models (LLaMA-3 / BitNet 2B4T, Falcon3); run by ``tokenizers``.
2. ``tokenizer.sentencepiece.model``: the original SentencePiece model bytes, embedded by
   ``bitnet convert`` for LLaMA-2-style models (1bitLLM); run by ``sentencepiece``.
3. llama.cpp's ``tokenizer.ggml.*`` arrays alone (files written by llama.cpp or bitnet.cpp):
   rebuilt into the same two libraries' models by :mod:`bitnet.tokenizer_ggml`.

Special tokens (BOS, EOS, end-of-turn) come from the file's metadata. Special-token text in a
prompt such as ``"<|eot_id|>"`` is read as that one token (llama.cpp's ``parse_special``), which
chat templates rely on; pass ``special=False`` to :meth:`Tokenizer.encode` to read it as text.
"""

from __future__ import annotations

import json
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from .errors import FormatError, ParameterError, UnsupportedError
from .tokenizer_ggml import bpe_from_arrays, byte_decoder, sentencepiece_from_arrays
from .tokenizer_meta import (
    BYTE,
    CONTROL,
    UNKNOWN,
    UNUSED,
    USER_DEFINED,
    TokenizerMeta,
    byte_of_piece,
    read_meta,
)

__all__ = ["Tokenizer", "check_text", "tokenizer_from_gguf"]

KEY_HF_JSON = "tokenizer.huggingface.json"
KEY_SP_MODEL = "tokenizer.sentencepiece.model"


def check_text(text: object, param: str) -> str:
    """text itself when it is a str that UTF-8 can encode, else a ParameterError naming param.

    Lone surrogates are what ``errors="surrogateescape"`` makes of undecodable bytes (command
    line arguments, files read that way): no tokenizer can encode them.
    """
    if not isinstance(text, str):
        raise ParameterError(param, f"{param} must be a str, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ParameterError(
            param,
            f"{param} is not valid Unicode: it holds the lone surrogate {text[e.start]!r} at "
            f"index {e.start} (bytes that were not UTF-8, decoded with errors='surrogateescape'?)",
        ) from None
    return text


class Tokenizer(ABC):
    """Text <-> token ids of one model. Immutable and safe to share between threads.

    Attributes:
        bos_id: The beginning-of-sequence token, or None.
        eos_ids: Tokens that end generation (end of sequence, end of turn, end of message).
        add_bos: Whether prompts start with ``bos_id`` by default.
        strip_leading_space: Whether decoding a sequence from its start drops one leading
            space (SentencePiece's dummy prefix).

    Example:
        >>> tok = bitnet.load("model.gguf").tokenizer  # doctest: +SKIP
        >>> ids = tok.encode("Hello world")  # doctest: +SKIP
        >>> tok.decode(ids)  # doctest: +SKIP
        'Hello world'
    """

    kind: str  # "bpe" or "sentencepiece"
    strip_leading_space: bool = False

    def __init__(self, meta: TokenizerMeta) -> None:
        self.bos_id = meta.bos_id
        self.eos_ids = meta.eos_ids
        self.add_bos = meta.add_bos
        self._meta = meta
        self._pieces: list[bytes] | None = None
        self._pieces_lock = threading.Lock()

    @abstractmethod
    def encode(self, text: str, *, special: bool = True) -> list[int]:
        """Token ids of text, without BOS.

        Args:
            text: Any string.
            special: Read special-token text (``"<|eot_id|>"``, ``"<s>"``) as the token itself;
                False reads it as ordinary text.
        """

    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids, as the reference library decodes them."""

    @abstractmethod
    def _build_pieces(self) -> list[bytes]:
        """The bytes each token id adds to generated text."""

    @property
    def n_tokens(self) -> int:
        """Number of token ids the tokenizer knows (the table :meth:`token_bytes` covers)."""
        return len(self._piece_table())

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes token_id adds to generated text.

        Control tokens (BOS, EOS, chat markers) add nothing; a token may hold part of a UTF-8
        character, which is why streaming works on bytes rather than decoding token by token.
        """
        table = self._piece_table()
        return table[token_id] if 0 <= token_id < len(table) else b""

    def token_text(self, token_id: int) -> str:
        """The token's string as the file stores it (e.g. ``"<|begin_of_text|>"``)."""
        tokens = self._meta.tokens
        return tokens[token_id] if 0 <= token_id < len(tokens) else ""

    def _piece_table(self) -> list[bytes]:
        if self._pieces is None:
            with self._pieces_lock:
                if self._pieces is None:
                    self._pieces = self._build_pieces()
        return self._pieces

    def _type_of(self, token_id: int) -> int | None:
        types = self._meta.types
        return types[token_id] if types is not None and token_id < len(types) else None


class _HuggingFace(Tokenizer):
    """A ``tokenizers`` tokenizer: an embedded tokenizer.json or rebuilt byte-level BPE."""

    kind = "bpe"

    def __init__(self, tok: Any, meta: TokenizerMeta, decoder: Any) -> None:
        super().__init__(meta)
        self._tok = tok
        self._decoder = json.dumps(decoder, ensure_ascii=False)
        self._literal: Any = None  # a copy that reads special-token text as text
        self._literal_lock = threading.Lock()
        self.strip_leading_space = '"Strip"' in self._decoder

    def encode(self, text: str, *, special: bool = True) -> list[int]:
        check_text(text, "text")
        tok = self._tok if special else self._literal_tokenizer()
        return list(tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode([int(i) for i in ids], skip_special_tokens=False))

    def _literal_tokenizer(self) -> Any:
        if self._literal is None:
            from tokenizers import Tokenizer as HfTokenizer

            with self._literal_lock:
                if self._literal is None:
                    copy = HfTokenizer.from_str(self._tok.to_str())
                    copy.encode_special_tokens = True
                    self._literal = copy
        return self._literal

    def _build_pieces(self) -> list[bytes]:
        tok = self._tok
        n = max(tok.get_vocab_size(with_added_tokens=True), len(self._meta.tokens))
        added = tok.get_added_tokens_decoder()
        byte_level = '"ByteLevel"' in self._decoder
        metaspace = '"ByteFallback"' in self._decoder or "\u2581" in self._decoder
        to_byte = byte_decoder()
        out: list[bytes] = []
        for i in range(n):
            kind = self._type_of(i)
            if kind in (CONTROL, UNUSED) or (i in added and added[i].special):
                out.append(b"")
                continue
            if i in added:
                out.append(added[i].content.encode())
                continue
            piece = tok.id_to_token(i)
            if piece is None:
                out.append(b"")
            elif byte_level and all(c in to_byte for c in piece):
                out.append(bytes(to_byte[c] for c in piece))
            elif metaspace and byte_of_piece(piece) is not None:
                out.append(bytes([byte_of_piece(piece) or 0]))
            elif metaspace:
                out.append(piece.replace("\u2581", " ").encode())
            else:
                out.append(str(tok.decode([i], skip_special_tokens=False)).encode())
        return out


class _SentencePiece(Tokenizer):
    """A SentencePiece model: embedded, or rebuilt from llama.cpp's arrays.

    SentencePiece itself never reads control pieces (``<s>``) from text, so special-token text
    is split off first and each stretch of ordinary text is encoded on its own, with the dummy
    prefix, as llama.cpp does.
    """

    kind = "sentencepiece"

    def __init__(self, model: bytes, meta: TokenizerMeta, source: str) -> None:
        super().__init__(meta)
        import sentencepiece as spm

        self._source = source  # the key(s) the model came from, for messages
        self._sp = spm.SentencePieceProcessor()
        try:
            self._sp.LoadFromSerializedProto(model)
        except (RuntimeError, UnicodeDecodeError) as e:  # a status quoting non-UTF-8 bytes
            raise FormatError(
                f"{meta.where}: the SentencePiece model of key '{source}' does not load ({e})"
            ) from e
        self._n = int(self._sp.get_piece_size())
        self.n_pieces = self._n
        first = self._sp.encode("a", out_type=str)
        self.strip_leading_space = bool(first) and first[0].startswith("\u2581")
        special: dict[str, int] = {}
        literal: dict[str, int] = {}
        for i in range(max(self._n, len(meta.tokens))):
            kind = self._type_of(i)
            if i < self._n:
                text = self._piece(i)
                if kind is None:
                    kind = CONTROL if self._sp.is_control(i) else None
            else:
                text = meta.tokens[i]
            if not text:
                continue
            if kind in (CONTROL, UNKNOWN):
                special.setdefault(text, i)
            elif kind == USER_DEFINED and i >= self._n:  # pieces the model itself does not know
                special.setdefault(text, i)
                literal.setdefault(text, i)
        self._special = special
        self._literal = literal
        self._special_re = _alternation(special)
        self._literal_re = _alternation(literal)

    def _piece(self, i: int) -> str:
        try:
            return str(self._sp.id_to_piece(i))
        except UnicodeDecodeError as e:  # the model's protobuf holds bytes that are not UTF-8
            raise FormatError(
                f"{self._meta.where}: piece {i} of the SentencePiece model of key "
                f"'{self._source}' is not valid UTF-8 ({e.reason} at byte {e.start})"
            ) from None

    def encode(self, text: str, *, special: bool = True) -> list[int]:
        check_text(text, "text")
        pattern, table = (
            (self._special_re, self._special) if special else (self._literal_re, self._literal)
        )
        if pattern is None:
            return list(self._sp.encode(text))
        out: list[int] = []
        pos = 0
        for m in pattern.finditer(text):
            if m.start() > pos:
                out.extend(self._sp.encode(text[pos : m.start()]))
            out.append(table[m.group()])
            pos = m.end()
        if pos < len(text):
            out.extend(self._sp.encode(text[pos:]))
        return out

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._sp.decode([int(i) for i in ids if 0 <= i < self._n]))

    def _build_pieces(self) -> list[bytes]:
        sp = self._sp
        out: list[bytes] = []
        for i in range(max(self._n, len(self._meta.tokens))):
            if i >= self._n:
                keep = self._type_of(i) == USER_DEFINED
                out.append(self._meta.tokens[i].encode() if keep else b"")
                continue
            piece = self._piece(i)
            byte = byte_of_piece(piece)
            if byte is not None and (sp.is_byte(i) or self._type_of(i) == BYTE):
                out.append(bytes([byte]))
            elif sp.is_control(i) or sp.is_unused(i):
                out.append(b"")
            elif sp.is_unknown(i):
                out.append(" \u2047 ".encode())  # what SentencePiece decodes <unk> to
            else:
                out.append(piece.replace("\u2581", " ").encode())
        return out


def _alternation(table: dict[str, int]) -> re.Pattern[str] | None:
    if not table:
        return None
    return re.compile("|".join(re.escape(t) for t in sorted(table, key=len, reverse=True)))


def tokenizer_from_gguf(file: Any, n_vocab: int | None = None) -> Tokenizer:
    """The tokenizer stored in a GGUF file (a ``_core.GgufFile``), checked against the model.

    Everything that can be wrong with the tokenizer data is found here, when the model loads:
    each ``tokenizer.*`` key's type, length and range (:mod:`bitnet.tokenizer_meta`), that the
    reference library accepts the vocabulary, and that no token id reaches n_vocab.

    Args:
        file: The GGUF file.
        n_vocab: Rows of the model's token embedding (None: not checked).

    Raises:
        UnsupportedError: The file carries no tokenizer bitnet can rebuild.
        FormatError: The tokenizer data is malformed or inconsistent (names the key).
    """
    meta = read_meta(file, n_vocab)
    tok, key, size = _build(file, meta)
    if n_vocab is not None and size > n_vocab:
        raise FormatError(
            f"{meta.where}: the tokenizer in key '{key}' has {size} tokens, more than the "
            f"model's {n_vocab} token embeddings (rows of token_embd.weight)"
        )
    tok._piece_table()  # built now, so that a malformed piece fails at load
    return tok


def _build(file: Any, meta: TokenizerMeta) -> tuple[Tokenizer, str, int]:
    """The tokenizer, the key it came from and how many token ids it can produce."""
    hf_json = file.get(KEY_HF_JSON)
    if hf_json is not None:
        from tokenizers import Tokenizer as HfTokenizer

        try:
            spec = json.loads(hf_json)
        except (ValueError, RecursionError) as e:
            raise FormatError(f"{meta.where}: {KEY_HF_JSON} does not load ({e})") from e
        if not isinstance(spec, dict):
            raise FormatError(
                f"{meta.where}: {KEY_HF_JSON} should be a JSON object, found {type(spec).__name__}"
            )
        decoder = spec.get("decoder")
        try:
            tok = HfTokenizer.from_str(hf_json)
        except Exception as e:  # tokenizers raises plain Exception
            raise FormatError(f"{meta.where}: {KEY_HF_JSON} does not load ({e})") from e
        size = int(tok.get_vocab_size(with_added_tokens=True))
        return _HuggingFace(tok, meta, decoder), KEY_HF_JSON, size
    sp_model = file.get(KEY_SP_MODEL)
    if sp_model is not None:
        sp = _SentencePiece(bytes(sp_model), meta, KEY_SP_MODEL)
        return sp, KEY_SP_MODEL, sp.n_pieces
    model = file.get("tokenizer.ggml.model")
    if model is not None and not meta.tokens:
        raise FormatError(f"{meta.where}: tokenizer.ggml.model is set but tokens are missing")
    key = "tokenizer.ggml.tokens"
    if model == "gpt2":
        merges = file.get("tokenizer.ggml.merges")
        if merges is None:
            raise FormatError(f"{meta.where}: a BPE vocabulary needs tokenizer.ggml.merges")
        tok = bpe_from_arrays(
            meta.tokens, meta.types, merges, file.get("tokenizer.ggml.pre"), meta.where
        )
        return _HuggingFace(tok, meta, {"type": "ByteLevel"}), key, len(meta.tokens)
    if model == "llama":
        space = file.get("tokenizer.ggml.add_space_prefix")
        ids = meta.special_ids
        proto = sentencepiece_from_arrays(
            meta.tokens,
            file.get("tokenizer.ggml.scores"),
            meta.types,
            unk_id=ids["tokenizer.ggml.unknown_token_id"],
            bos_id=meta.bos_id,
            eos_id=ids["tokenizer.ggml.eos_token_id"],
            pad_id=ids["tokenizer.ggml.padding_token_id"],
            add_space_prefix=True if space is None else bool(space),
            where=meta.where,
        )
        return _SentencePiece(proto, meta, "tokenizer.ggml.tokens"), key, len(meta.tokens)
    if model is None:
        raise UnsupportedError(f"{meta.where}: the file carries no tokenizer")
    raise UnsupportedError(
        f"{meta.where}: tokenizer.ggml.model '{model}' is not supported (gpt2, llama)"
    )
