"""Reading and checking the tokenizer metadata of a GGUF file (``tokenizer.*`` keys).

Every key is checked for its stored type, its length against the vocabulary and its values'
range when the model is loaded, so that a malformed file fails at ``bitnet.load`` with a
:class:`~bitnet.errors.FormatError` naming the file, the key (and element) and what was expected
and found, never later at generate time and never as an ``IndexError`` or ``TypeError``.

The rules follow llama.cpp's reader (``llama-vocab.cpp``): token ids are integers, a negative
id (or ``0xFFFFFFFF``) means "none", flags are GGUF bools, ``token_type`` and ``scores`` have
one entry per token, BYTE tokens are spelled ``<0xNN>``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from .errors import FormatError

__all__ = [
    "BYTE",
    "CONTROL",
    "NORMAL",
    "UNKNOWN",
    "UNUSED",
    "USER_DEFINED",
    "TokenizerMeta",
    "byte_of_piece",
    "read_meta",
]

# GGUF token types (the same numbers as SentencePiece's piece types); 0 is llama.cpp's
# "undefined".
UNDEFINED, NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 0, 1, 2, 3, 4, 5, 6

_INTS = frozenset({"uint8", "int8", "uint16", "int16", "uint32", "int32", "uint64", "int64"})
_NUMBERS = _INTS | {"float32", "float64"}
_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_NULL_IDS = (0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF)  # -1 written as an unsigned integer

# Texts of end-of-turn tokens, used when the file names no tokenizer.ggml.eot_token_id (the
# official 2B4T GGUF ends turns with <|eot_id|> but declares only <|end_of_text|>).
_EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<EOT>")

SPECIAL_ID_KEYS = tuple(
    f"tokenizer.ggml.{name}_token_id"
    for name in ("bos", "eos", "eot", "eom", "unknown", "padding", "seperator", "cls", "mask")
)


@dataclass(frozen=True)
class TokenizerMeta:
    """What the GGUF metadata says about the vocabulary and its special tokens."""

    where: str
    tokens: list[str]  # tokenizer.ggml.tokens ([] when absent)
    types: list[int] | None  # tokenizer.ggml.token_type, one per token
    bos_id: int | None
    eos_ids: tuple[int, ...]
    add_bos: bool
    special_ids: dict[str, int | None]  # every SPECIAL_ID_KEYS entry (None: absent or none)
    n_vocab: int | None  # rows of the model's embedding (None: not checked)


def byte_of_piece(piece: str) -> int | None:
    """The byte a ``<0xNN>`` piece stands for, or None when the piece is not one."""
    m = _BYTE_PIECE.fullmatch(piece)
    return int(m.group(1), 16) if m else None


class _Reader:
    """Typed access to one file's keys; every mismatch is a FormatError naming the key."""

    def __init__(self, file: Any) -> None:
        self.file = file
        self.where = str(file.path)

    def fail(self, key: str, expected: str, found: str) -> FormatError:
        return FormatError(f"{self.where}: key '{key}' should be {expected}, found {found}")

    def kind(self, key: str) -> str | None:
        return self.file.value_type(key)  # type: ignore[no-any-return]

    def string(self, key: str) -> str | None:
        kind = self.kind(key)
        if kind is None:
            return None
        if kind != "string":
            raise self.fail(key, "a string", kind)
        return str(self.file.get(key))

    def flag(self, key: str) -> bool | None:
        kind = self.kind(key)
        if kind is None:
            return None
        if kind != "bool":
            raise self.fail(key, "a bool", kind)
        return bool(self.file.get(key))

    def integer(self, key: str) -> int | None:
        kind = self.kind(key)
        if kind is None:
            return None
        if kind not in _INTS:
            raise self.fail(key, "an integer", kind)
        return int(self.file.get(key))

    def array(self, key: str, elements: frozenset[str], expected: str, length: int | None) -> Any:
        """The array's value, after its element type and (when given) its length are checked."""
        kind = self.kind(key)
        if kind is None:
            return None
        if not (kind.startswith("array[") and kind[6:-1] in elements):
            raise self.fail(key, expected, kind)
        n = int(self.file.array_length(key))
        if length is not None and n != length:
            raise FormatError(
                f"{self.where}: key '{key}' has {n} entries, expected {length} "
                "(one per entry of tokenizer.ggml.tokens)"
            )
        return self.file.get(key)


def read_meta(file: Any, n_vocab: int | None = None) -> TokenizerMeta:
    """Reads and checks the ``tokenizer.ggml.*`` metadata of a ``_core.GgufFile``.

    Args:
        file: The GGUF file.
        n_vocab: Rows of the model's token embedding: no token id may reach it (None: skip).

    Raises:
        FormatError: A key of the wrong type, length or range (named, with expected and found).
    """
    r = _Reader(file)
    where = r.where
    n_tokens_stored = file.array_length("tokenizer.ggml.tokens")
    if n_tokens_stored is not None and n_vocab is not None and n_tokens_stored > n_vocab:
        raise FormatError(
            f"{where}: key 'tokenizer.ggml.tokens' has {n_tokens_stored} entries, more than the "
            f"model's {n_vocab} token embeddings (rows of token_embd.weight)"
        )
    raw_tokens = r.array(
        "tokenizer.ggml.tokens", frozenset({"string"}), "an array of strings", None
    )
    tokens = [str(t) for t in raw_tokens] if raw_tokens is not None else []
    n = len(tokens)
    length = n if raw_tokens is not None else None
    raw_types = r.array("tokenizer.ggml.token_type", _INTS, "an array of integers", length)
    types: list[int] | None = None
    if raw_types is not None:
        if raw_tokens is None:
            raise FormatError(f"{where}: key 'tokenizer.ggml.token_type' is given without tokens")
        types = [int(t) for t in raw_types]
        for i, t in enumerate(types):
            if not UNDEFINED <= t <= BYTE:
                raise FormatError(
                    f"{where}: tokenizer.ggml.token_type[{i}] is {t}, expected a token type "
                    f"in [{UNDEFINED}, {BYTE}]"
                )
            if t == BYTE and byte_of_piece(tokens[i]) is None:
                raise FormatError(
                    f"{where}: tokenizer.ggml.tokens[{i}] = {tokens[i]!r} has type BYTE "
                    "(tokenizer.ggml.token_type), so it must be spelled <0xNN>"
                )
    scores = r.array("tokenizer.ggml.scores", _NUMBERS, "an array of numbers", length)
    if scores is not None:
        for i, s in enumerate(scores):
            if math.isnan(float(s)):
                raise FormatError(f"{where}: tokenizer.ggml.scores[{i}] is NaN")
    merges = r.array("tokenizer.ggml.merges", frozenset({"string"}), "an array of strings", None)
    if merges is not None:
        for i, m in enumerate(merges):
            left, sep, right = str(m).partition(" ")
            if not sep or not left or not right:
                raise FormatError(
                    f"{where}: tokenizer.ggml.merges[{i}] = {m!r} is not 'left right' (two "
                    "tokens separated by one space)"
                )
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.chat_template"):
        r.string(key)
    r.string("tokenizer.huggingface.json")
    r.array(
        "tokenizer.sentencepiece.model", frozenset({"uint8", "int8"}), "an array of bytes", None
    )

    # Token ids index the tokens (when the file lists them) and the model's embedding.
    bound = n if raw_tokens is not None else n_vocab
    special: dict[str, int | None] = {}
    for key in SPECIAL_ID_KEYS:
        value = r.integer(key)
        if value is not None and (value < 0 or value in _NULL_IDS):
            value = None  # llama.cpp's LLAMA_TOKEN_NULL
        if value is not None and bound is not None and value >= bound:
            what = "tokenizer.ggml.tokens" if raw_tokens is not None else "the model's vocabulary"
            raise FormatError(
                f"{where}: key '{key}' is {value}, expected a token id in [0, {bound}) "
                f"({what} has {bound} entries)"
            )
        special[key] = value

    bos = special["tokenizer.ggml.bos_token_id"]
    eos_ids: list[int] = []
    for name in ("eos", "eot", "eom"):
        end = special[f"tokenizer.ggml.{name}_token_id"]
        if end is not None and end not in eos_ids:
            eos_ids.append(end)
    if special["tokenizer.ggml.eot_token_id"] is None and tokens:
        wanted = set(_EOT_TEXTS)
        for i, text in enumerate(tokens):
            is_special = types is None or types[i] in (CONTROL, USER_DEFINED)
            if text in wanted and i not in eos_ids and is_special:
                eos_ids.append(i)

    add_bos_value = r.flag("tokenizer.ggml.add_bos_token")
    r.flag("tokenizer.ggml.add_eos_token")
    r.flag("tokenizer.ggml.add_space_prefix")
    model = r.string("tokenizer.ggml.model")
    if add_bos_value is not None:
        add_bos = add_bos_value
    elif model == "llama" or r.string("tokenizer.ggml.pre") in _llama3_pre():
        add_bos = bos is not None  # llama.cpp's default for these vocabularies
    else:
        add_bos = bos is not None and model != "gpt2"
    return TokenizerMeta(
        where=where,
        tokens=tokens,
        types=types,
        bos_id=bos,
        eos_ids=tuple(eos_ids),
        add_bos=add_bos,
        special_ids=special,
        n_vocab=n_vocab,
    )


def _llama3_pre() -> frozenset[str]:
    from .tokenizer_ggml import LLAMA3_PRE

    return LLAMA3_PRE
