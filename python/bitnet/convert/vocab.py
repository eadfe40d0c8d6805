"""Writing a checkpoint's tokenizer into GGUF metadata.

Two payloads are written (docs/format.md, "Tokenizer"):

* llama.cpp's standard ``tokenizer.ggml.*`` arrays (tokens, scores, token types, merges, special
  token ids, add_bos/add_eos), produced with gguf-py's own vocabulary readers, so that llama.cpp
  tokenizes our files exactly as it tokenizes its own;
* the original tokenizer file, so that bitnet tokenizes with the reference library itself:
  ``tokenizer.huggingface.json`` (the whole tokenizer.json, a GGUF standard key) and/or
  ``tokenizer.sentencepiece.model`` (the bytes of tokenizer.model, a bitnet key).

The chat template from tokenizer_config.json (or chat_template.jinja) goes to
``tokenizer.chat_template``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf

from ..errors import FormatError
from .config import read_json_file

__all__ = ["KEY_SENTENCEPIECE_MODEL", "TokenizerPayload", "read_tokenizer"]

KEY_SENTENCEPIECE_MODEL = "tokenizer.sentencepiece.model"

# The pre-tokenizer split of LLaMA-3's tokenizer.json (also used by BitNet 2B4T and HF1BitLLM);
# llama.cpp calls this pre-tokenizer "llama-bpe".
_LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_EOT_TEXTS = ("<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>")

log = logging.getLogger(__name__)


@dataclass
class TokenizerPayload:
    """Everything about the tokenizer that goes into the GGUF file."""

    model: str  # "gpt2" (byte-level BPE) or "llama" (SentencePiece)
    pre: str | None
    tokens: list[bytes]
    scores: list[float] | None
    token_types: list[int]
    special: gguf.SpecialVocab
    hf_json: str | None
    sp_model: bytes | None
    eot_id: int | None

    def add_to(self, w: gguf.GGUFWriter) -> None:
        w.add_tokenizer_model(self.model)
        if self.pre is not None:
            w.add_tokenizer_pre(self.pre)
        w.add_token_list(self.tokens)
        if self.scores is not None:
            w.add_token_scores(self.scores)
        w.add_token_types(self.token_types)
        self.special.add_to_gguf(w, quiet=True)
        if self.eot_id is not None and "eot" not in self.special.special_token_ids:
            w.add_eot_token_id(self.eot_id)
        if self.hf_json is not None:
            w.add_string(gguf.Keys.Tokenizer.HF_JSON, self.hf_json)
        if self.sp_model is not None:
            w.add_array(KEY_SENTENCEPIECE_MODEL, self.sp_model)


# What gguf-py's vocabulary readers and sentencepiece raise on a malformed file: they parse
# without validating, so a wrong type or a missing key surfaces as whatever Python error the
# parsing code hits first. Each is turned into a FormatError naming the file.
_PARSE_ERRORS = (
    RuntimeError,  # sentencepiece: "Internal: could not parse ModelProto"
    ValueError,  # includes UnicodeError and json.JSONDecodeError
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    AssertionError,
    RecursionError,
    OverflowError,
    struct.error,
    OSError,
)


@contextlib.contextmanager
def _reading(what: Path | str) -> Iterator[None]:
    """Turns a parsing error of a tokenizer file into a FormatError naming it."""
    try:
        yield
    except FormatError:
        raise
    except _PARSE_ERRORS as e:
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FormatError(
            f"{what}: not a valid tokenizer file ({type(e).__name__}: {detail[:200]})"
        ) from e


def _find_tokenizer_dir(src: Path, tokenizer: Path | None) -> Path:
    candidates = [tokenizer] if tokenizer is not None else [src]
    for d in candidates:
        if d is not None and (
            (d / "tokenizer.json").is_file() or (d / "tokenizer.model").is_file()
        ):
            return d
    where = tokenizer if tokenizer is not None else src
    raise FormatError(
        f"{where}: no tokenizer.json or tokenizer.model found; pass the directory of the model's "
        "tokenizer with tokenizer=... (CLI: --tokenizer DIR)"
    )


def _is_byte_level_bpe(tokenizer_json: dict[str, object]) -> bool:
    model = tokenizer_json.get("model")
    decoder = tokenizer_json.get("decoder")
    return (
        isinstance(model, dict)
        and model.get("type") == "BPE"
        and not model.get("byte_fallback", False)
        and isinstance(decoder, dict)
        and decoder.get("type") == "ByteLevel"
    )


def _detect_pre(tokenizer_json: dict[str, object]) -> str:
    """llama.cpp's name for the pre-tokenizer of a byte-level BPE tokenizer.json."""
    text = json.dumps(tokenizer_json.get("pre_tokenizer"))
    patterns = re.findall(r'"Regex": "((?:[^"\\]|\\.)*)"', text)
    decoded = [json.loads(f'"{p}"') for p in patterns]
    if _LLAMA3_PATTERN in decoded:
        return "llama-bpe"
    log.warning(
        "unrecognised pre-tokenizer; writing tokenizer.ggml.pre = 'default' (llama.cpp "
        "may split words differently; bitnet itself uses the embedded tokenizer.json)"
    )
    return "default"


def _generation_eos(src: Path) -> list[int]:
    path = src / "generation_config.json"
    if not path.is_file():
        return []
    try:
        data = read_json_file(path)
    except FormatError:
        return []  # optional file: a broken one is ignored, as transformers does
    eos = data.get("eos_token_id") if isinstance(data, dict) else None
    if isinstance(eos, int):
        return [eos]
    if isinstance(eos, list):
        return [e for e in eos if isinstance(e, int)]
    return []


def _check_chat_template(template: object, tok_dir: Path) -> None:
    """A chat template is a string, or a list of {"name", "template"} objects (named ones)."""
    if template is None or isinstance(template, str):
        return
    if isinstance(template, list) and all(
        isinstance(t, dict)
        and isinstance(t.get("name"), str)
        and isinstance(t.get("template"), str)
        for t in template
    ):
        return
    text = repr(template)
    raise FormatError(
        f"{tok_dir / 'tokenizer_config.json'}: chat_template must be a string or a list of "
        f"{{'name', 'template'}} objects, found {text[:57] + '...' if len(text) > 60 else text}"
    )


def read_tokenizer(src: Path, n_vocab: int, tokenizer: Path | None = None) -> TokenizerPayload:
    """Reads the tokenizer of checkpoint directory src (or of the directory `tokenizer`).

    The token list is padded to n_vocab (the embedding's row count) with unused "[PAD{i}]"
    tokens, as llama.cpp does. Raises FormatError when no tokenizer is found or it has more
    tokens than the model.
    """
    tok_dir = _find_tokenizer_dir(src, tokenizer)
    tj_path = tok_dir / "tokenizer.json"
    sp_path = tok_dir / "tokenizer.model"
    tokenizer_json: dict[str, object] | None = None
    if tj_path.is_file():
        parsed = read_json_file(tj_path, "object")
        if not isinstance(parsed, dict):
            raise FormatError(f"{tj_path}: expected a JSON object, found {type(parsed).__name__}")
        tokenizer_json = parsed

    pre: str | None = None
    vocab: gguf.vocab.Vocab
    source = tj_path
    if tokenizer_json is not None and _is_byte_level_bpe(tokenizer_json):
        with _reading(tj_path):
            vocab = gguf.vocab.BpeVocab(tok_dir)
            pre = _detect_pre(tokenizer_json)
        model = "gpt2"
        load_merges = True
    elif sp_path.is_file():
        source = sp_path
        with _reading(sp_path):
            vocab = gguf.vocab.SentencePieceVocab(tok_dir)
        model = "llama"
        load_merges = False
    elif tokenizer_json is not None:
        with _reading(tj_path):
            vocab = gguf.vocab.LlamaHfVocab(tok_dir)
        model = "llama"
        load_merges = False
    else:  # pragma: no cover - _find_tokenizer_dir guarantees one of the files
        raise FormatError(f"{tok_dir}: no usable tokenizer")

    tokens: list[bytes] = []
    scores: list[float] = []
    types: list[int] = []
    with _reading(source):
        for text, score, ttype in vocab.all_tokens():
            tokens.append(text.encode("utf-8") if isinstance(text, str) else bytes(text))
            scores.append(float(score))
            types.append(int(ttype))
    if len(tokens) > n_vocab:
        raise FormatError(
            f"{tok_dir}: the tokenizer has {len(tokens)} tokens but the model's embedding has "
            f"only {n_vocab} rows"
        )
    for i in range(len(tokens), n_vocab):
        tokens.append(f"[PAD{i}]".encode())
        scores.append(-1000.0)
        types.append(int(gguf.TokenType.UNUSED))

    with _reading(f"{tok_dir} (tokenizer_config.json, tokenizer.json or config.json)"):
        special = gguf.SpecialVocab(tok_dir, load_merges=load_merges, n_vocab=n_vocab)
    _check_chat_template(special.chat_template, tok_dir)
    eot_id: int | None = None
    by_text = {t: i for i, t in enumerate(tokens)}
    eos_ids = _generation_eos(src)
    eos = special.special_token_ids.get("eos")
    for candidate in eos_ids:
        if candidate != eos and 0 <= candidate < n_vocab:
            eot_id = candidate
            break
    if eot_id is None:
        for eot_text in _EOT_TEXTS:
            found = by_text.get(eot_text.encode())
            if found is not None and found != eos:
                eot_id = found
                break

    return TokenizerPayload(
        model=model,
        pre=pre,
        tokens=tokens,
        scores=scores if model == "llama" else None,
        token_types=types,
        special=special,
        hf_json=tj_path.read_text(encoding="utf-8") if tokenizer_json is not None else None,
        sp_model=sp_path.read_bytes() if sp_path.is_file() else None,
        eot_id=eot_id,
    )
