"""Reference-library tokenizers rebuilt from llama.cpp's ``tokenizer.ggml.*`` arrays alone.

GGUF files written by llama.cpp (and bitnet.cpp) carry no tokenizer file, only arrays: ``tokens``,
``scores``, ``token_type``, ``merges`` and the pre-tokenizer name ``pre``. From them this module
builds the objects the reference libraries use, so that tokenization is done by ``tokenizers``
and ``sentencepiece`` themselves rather than by a re-implementation:

* ``tokenizer.ggml.model == "gpt2"`` (byte-level BPE: LLaMA-3, BitNet 2B4T, Falcon3): a
  ``tokenizers`` BPE model over the token strings and merges, the pre-tokenizer regexes that
  llama.cpp associates with ``pre``, byte-level mapping and decoding. Control tokens become
  special added tokens, user-defined tokens plain added tokens.
* ``tokenizer.ggml.model == "llama"`` (SentencePiece BPE: LLaMA-1/2, 1bitLLM, Mistral): a
  SentencePiece ``ModelProto`` with the pieces, scores and types (GGUF token types are
  SentencePiece's piece types), identity normalization and the dummy-prefix setting.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any

from .errors import FormatError, UnsupportedError
from .tokenizer_meta import BYTE, CONTROL, NORMAL, UNKNOWN, UNUSED, USER_DEFINED

__all__ = [
    "CONTROL",
    "LLAMA3_PRE",
    "USER_DEFINED",
    "bpe_from_arrays",
    "byte_decoder",
    "byte_encoder",
    "sentencepiece_from_arrays",
]

_LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT2_REGEX = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"

# Values of tokenizer.ggml.pre that mean LLaMA-3's split (llama.cpp treats them alike: one
# regex, and a pre-token found whole in the vocabulary is not merged further).
LLAMA3_PRE = frozenset(
    {"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "falcon_e", "pixtral", "lfm2"}
)

# pre -> (regexes applied one after the other, ignore_merges).
_PRE_TOKENIZERS: dict[str, tuple[tuple[str, ...], bool]] = {
    **dict.fromkeys(LLAMA3_PRE, ((_LLAMA3_REGEX,), True)),
    "gpt-2": ((_GPT2_REGEX,), False),
    "default": ((r"[\p{P}\$\+<=>\^~\|]+", _GPT2_REGEX, r"\p{N}+", r"[0-9][0-9][0-9]"), False),
}


def byte_encoder() -> dict[int, str]:
    """GPT-2's reversible map from bytes to printable characters (byte-level BPE's alphabet).

    Bytes that are printable Latin-1 characters other than space stand for themselves; the other
    68 bytes map to U+0100 onwards, in byte order.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\N{INVERTED EXCLAMATION MARK}"), ord("\N{NOT SIGN}") + 1),
        *range(ord("\N{REGISTERED SIGN}"), ord("\N{LATIN SMALL LETTER Y WITH DIAERESIS}") + 1),
    ]
    table: dict[int, str] = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def byte_decoder() -> dict[str, int]:
    """The inverse of :func:`byte_encoder`."""
    return {c: b for b, c in byte_encoder().items()}


def _types(types: Any, n: int) -> list[int]:
    if types is None:
        return [NORMAL] * n
    out = [int(t) for t in types]
    if len(out) != n:
        raise FormatError(
            f"tokenizer.ggml.token_type has {len(out)} entries but tokenizer.ggml.tokens has {n}"
        )
    return out


def bpe_from_arrays(
    tokens: Sequence[str],
    token_types: Any,
    merges: Sequence[str],
    pre: str | None,
    where: str,
) -> Any:
    """A ``tokenizers.Tokenizer`` for llama.cpp's byte-level BPE arrays.

    Args:
        tokens: ``tokenizer.ggml.tokens``: byte-level strings for ordinary tokens, plain text for
            control and user-defined ones.
        token_types: ``tokenizer.ggml.token_type`` (None: all normal).
        merges: ``tokenizer.ggml.merges``, each "left right".
        pre: ``tokenizer.ggml.pre`` (None means "default", as in llama.cpp).
        where: The file, for error messages.

    Raises:
        UnsupportedError: The pre-tokenizer is not one bitnet knows.
        FormatError: Merges that do not split in two or refer to unknown tokens.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    name = pre or "default"
    if name not in _PRE_TOKENIZERS:
        known = ", ".join(sorted(_PRE_TOKENIZERS))
        raise UnsupportedError(
            f"{where}: tokenizer.ggml.pre '{name}' is not supported when the file carries no "
            f"tokenizer.json (supported: {known}); convert the model with `bitnet convert`, "
            "which embeds the original tokenizer"
        )
    regexes, ignore_merges = _PRE_TOKENIZERS[name]
    types = _types(token_types, len(tokens))
    vocab: dict[str, int] = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)  # a duplicate string keeps its first id, as llama.cpp does
    pairs: list[tuple[str, str]] = []
    for i, m in enumerate(merges):
        left, sep, right = m.partition(" ")
        if not sep or not left or not right:
            raise FormatError(f"{where}: tokenizer.ggml.merges[{i}] = {m!r} is not 'left right'")
        pairs.append((left, right))
    try:
        model = models.BPE(vocab=vocab, merges=pairs, ignore_merges=ignore_merges)
    except Exception as e:  # tokenizers raises plain Exception for inconsistent merges
        raise FormatError(f"{where}: the BPE merges do not fit the token list ({e})") from e
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes]
        + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
    )
    tok.decoder = decoders.ByteLevel()
    added = [
        AddedToken(tokens[i], special=types[i] == CONTROL, normalized=False)
        for i in range(len(tokens))
        if types[i] in (CONTROL, USER_DEFINED) and tokens[i] and vocab[tokens[i]] == i
    ]
    tok.add_special_tokens([a for a in added if a.special])
    tok.add_tokens([a for a in added if not a.special])
    return tok


def sentencepiece_from_arrays(
    tokens: Sequence[str],
    scores: Any,
    token_types: Any,
    *,
    unk_id: int | None,
    bos_id: int | None,
    eos_id: int | None,
    pad_id: int | None,
    add_space_prefix: bool,
    where: str,
) -> bytes:
    """A serialized SentencePiece BPE ``ModelProto`` for llama.cpp's "llama" arrays.

    llama.cpp tokenizes these files with SentencePiece's BPE algorithm (merges ranked by piece
    score), byte fallback, no normalization and an optional leading space: exactly what this
    model describes. Empty or repeated piece strings (SentencePiece rejects both) become unused
    placeholder pieces that encoding never produces.

    Raises:
        FormatError: Missing or mismatched scores.
    """
    # The generated protobuf module defines its classes at run time (needs protobuf).
    pb: Any = importlib.import_module("sentencepiece.sentencepiece_model_pb2")

    n = len(tokens)
    if scores is None:
        raise FormatError(f"{where}: a SentencePiece vocabulary needs tokenizer.ggml.scores")
    if len(scores) != n:
        raise FormatError(
            f"{where}: tokenizer.ggml.scores has {len(scores)} entries for {n} tokens"
        )
    types = _types(token_types, n)
    proto = pb.ModelProto()
    seen: set[str] = set()
    has_unknown = False
    known_types = (NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE)
    for i, (text, score, kind) in enumerate(zip(tokens, scores, types, strict=True)):
        piece = proto.pieces.add()
        piece.score = float(score)
        if not text or text in seen or kind not in known_types:
            piece.piece, piece.type = f"<bitnet:unused:{i}>", UNUSED
        else:
            piece.piece = text
            # SentencePiece allows one unknown piece; a second can never be produced anyway.
            piece.type = UNUSED if kind == UNKNOWN and has_unknown else kind
            has_unknown = has_unknown or kind == UNKNOWN
        seen.add(piece.piece)
    if unk_id is None or not 0 <= unk_id < n or proto.pieces[unk_id].type != UNKNOWN:
        unk_id = next((i for i, p in enumerate(proto.pieces) if p.type == UNKNOWN), None)
    if unk_id is None:  # SentencePiece requires an unknown piece
        unk_id = n
        piece = proto.pieces.add()
        piece.piece, piece.type, piece.score = "<bitnet:unk>", UNKNOWN, 0.0
    spec = proto.trainer_spec
    spec.model_type = pb.TrainerSpec.BPE
    spec.vocab_size = len(proto.pieces)
    spec.byte_fallback = any(p.type == BYTE for p in proto.pieces)
    spec.unk_id = unk_id
    spec.unk_piece = proto.pieces[unk_id].piece
    for field, value in (("bos", bos_id), ("eos", eos_id), ("pad", pad_id)):
        ok = value is not None and 0 <= value < n and proto.pieces[value].type == CONTROL
        setattr(spec, f"{field}_id", value if ok else -1)
        if ok:
            setattr(spec, f"{field}_piece", proto.pieces[value].piece)
    norm = proto.normalizer_spec
    norm.name = "identity"
    norm.add_dummy_prefix = add_space_prefix
    norm.remove_extra_whitespaces = False
    norm.escape_whitespaces = True
    return bytes(proto.SerializeToString())
