"""Real tokenizers shipped by PyPI packages, and GGUF files carrying only llama.cpp's arrays.

* LLaMA-3's tiktoken BPE file from ``llama-models`` (``llama_models/llama3/tokenizer.model``);
  the oracle is ``tiktoken`` loading that file offline.
* Mistral 7B v0.1's SentencePiece model from ``mistral-common``
  (``mistral_common/data/tokenizer.model.v1``), a LLaMA-2-style BPE model with byte fallback;
  the oracle is ``sentencepiece`` loading it.

The packages are located with ``importlib.util.find_spec`` (nothing of theirs is imported), so
they can be installed with ``pip install --no-deps``. The GGUF files are written the way
llama.cpp's converter writes them: token strings, types, merges or scores, special token ids.
"""

from __future__ import annotations

import base64
import importlib.util
from pathlib import Path

import gguf

# LLaMA-3's split (llama.cpp: pre "llama-bpe") and its 256 special tokens after the 128000 ranks.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_NAMED = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|image|>",
]
LLAMA3_SPECIALS = _LLAMA3_NAMED + [
    f"<|reserved_special_token_{i}|>" for i in range(2, 2 + 256 - len(_LLAMA3_NAMED))
]


def package_file(package: str, relative: str) -> Path | None:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = Path(root) / relative
        if path.is_file():
            return path
    return None


def llama3_model_file() -> Path | None:
    return package_file("llama_models", "llama3/tokenizer.model")


def mistral_model_file() -> Path | None:
    return package_file("mistral_common", "data/tokenizer.model.v1")


def read_ranks(path: Path) -> dict[bytes, int]:
    """A tiktoken BPE file: one "base64(token) rank" per line."""
    ranks: dict[bytes, int] = {}
    for line in path.read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def llama3_oracle(path: Path):  # -> tiktoken.Encoding
    import tiktoken

    ranks = read_ranks(path)
    return tiktoken.Encoding(
        name="llama3-test",
        pat_str=LLAMA3_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={s: len(ranks) + i for i, s in enumerate(LLAMA3_SPECIALS)},
    )


def _byte_chars() -> dict[int, str]:
    # GPT-2's byte -> printable character map, written out independently of bitnet's.
    keep = [b for b in range(256) if 33 <= b <= 126 or 161 <= b <= 172 or 174 <= b <= 255]
    table = {b: chr(b) for b in keep}
    moved = [b for b in range(256) if b not in table]
    table.update({b: chr(256 + i) for i, b in enumerate(moved)})
    return table


def _merges_from_ranks(ranks: dict[bytes, int]) -> list[tuple[bytes, bytes]]:
    """Merges equivalent to tiktoken's ranks: every split of a token into two tokens, ordered
    by the rank of the token they form (then by the ranks of the halves)."""
    found: list[tuple[int, int, int, bytes, bytes]] = []
    for token, rank in ranks.items():
        for i in range(1, len(token)):
            left, right = token[:i], token[i:]
            if left in ranks and right in ranks:
                found.append((rank, ranks[left], ranks[right], left, right))
    found.sort()
    return [(a, b) for _, _, _, a, b in found]


def write_llama3_gguf(path: Path, model_file: Path) -> Path:
    """A GGUF with LLaMA-3's vocabulary as llama.cpp writes it: gpt2 model, pre llama-bpe,
    byte-level token strings, merges, token types; BOS/EOS declared, no EOT id."""
    ranks = read_ranks(model_file)
    chars = _byte_chars()
    by_rank = sorted(ranks, key=ranks.__getitem__)
    tokens = ["".join(chars[b] for b in t) for t in by_rank] + LLAMA3_SPECIALS
    types = [int(gguf.TokenType.NORMAL)] * len(by_rank) + [int(gguf.TokenType.CONTROL)] * len(
        LLAMA3_SPECIALS
    )
    merges = [
        "".join(chars[b] for b in a) + " " + "".join(chars[b] for b in b_)
        for a, b_ in _merges_from_ranks(ranks)
    ]
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("llama-bpe")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(len(ranks))
    w.add_eos_token_id(len(ranks) + 1)
    w.add_add_bos_token(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def write_sentencepiece_gguf(path: Path, model_file: Path) -> Path:
    """A GGUF with a SentencePiece vocabulary as llama.cpp writes it (gguf-py's own
    SentencePieceVocab reader): llama model, pieces, scores, types, special ids."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(model_file, Path(tmp) / "tokenizer.model")
        vocab = gguf.vocab.SentencePieceVocab(Path(tmp))
        tokens, scores, types = [], [], []
        for text, score, ttype in vocab.all_tokens():
            tokens.append(text)
            scores.append(score)
            types.append(int(ttype))
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
