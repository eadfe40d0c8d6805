"""Tokenizers rebuilt from what a GGUF file holds, using the reference libraries.

Our files embed the original tokenizer (``tokenizer.huggingface.json`` for byte-level BPE models
such as LLaMA-3 / BitNet 2B4T, ``tokenizer.sentencepiece.model`` for SentencePiece models such as
1bitLLM), so tokenization is done by ``tokenizers`` / ``sentencepiece`` themselves and is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .errors import UnsupportedError

__all__ = ["Tokenizer", "tokenizer_from_gguf"]

KEY_HF_JSON = "tokenizer.huggingface.json"
KEY_SP_MODEL = "tokenizer.sentencepiece.model"


class Tokenizer(Protocol):
    """Text <-> token ids. Implementations are immutable and thread-safe."""

    bos_id: int | None
    eos_ids: tuple[int, ...]
    add_bos: bool

    def encode(self, text: str) -> list[int]:
        """Token ids of text, without BOS."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids (special tokens included as text)."""
        ...


class _SentencePiece:
    def __init__(self, model: bytes, meta: dict[str, Any]) -> None:
        import sentencepiece as spm

        self._sp = spm.SentencePieceProcessor()
        self._sp.LoadFromSerializedProto(model)
        self.bos_id = meta["bos_id"]
        self.eos_ids = meta["eos_ids"]
        self.add_bos = meta["add_bos"]
        self._n = self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._sp.decode([int(i) for i in ids if 0 <= i < self._n]))


class _HuggingFace:
    def __init__(self, tokenizer_json: str, meta: dict[str, Any]) -> None:
        from tokenizers import Tokenizer as HfTokenizer

        self._tok = HfTokenizer.from_str(tokenizer_json)
        self.bos_id = meta["bos_id"]
        self.eos_ids = meta["eos_ids"]
        self.add_bos = meta["add_bos"]

    def encode(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._tok.decode([int(i) for i in ids], skip_special_tokens=False))


def _special_meta(get: Any) -> dict[str, Any]:
    bos = get("tokenizer.ggml.bos_token_id")
    eos = get("tokenizer.ggml.eos_token_id")
    eot = get("tokenizer.ggml.eot_token_id")
    eos_ids = tuple(int(i) for i in (eos, eot) if i is not None)
    add_bos = get("tokenizer.ggml.add_bos_token")
    return {
        "bos_id": int(bos) if bos is not None else None,
        "eos_ids": eos_ids,
        "add_bos": bool(add_bos) if add_bos is not None else bos is not None,
    }


def tokenizer_from_gguf(file: Any) -> Tokenizer:
    """The tokenizer stored in a GGUF file (a ``_core.GgufFile``).

    Raises:
        UnsupportedError: The file carries no tokenizer bitnet can rebuild.
    """
    meta = _special_meta(file.get)
    hf_json = file.get(KEY_HF_JSON)
    if isinstance(hf_json, str):
        return _HuggingFace(hf_json, meta)
    sp_model = file.get(KEY_SP_MODEL)
    if sp_model is not None:
        return _SentencePiece(bytes(sp_model), meta)
    model = file.get("tokenizer.ggml.model")
    raise UnsupportedError(
        f"{file.path}: no embedded tokenizer.json or SentencePiece model "
        f"(tokenizer.ggml.model = {model!r}); rebuilding tokenizers from llama.cpp's arrays "
        "alone is not supported yet"
    )
