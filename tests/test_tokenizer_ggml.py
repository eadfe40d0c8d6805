"""Tokenizers rebuilt from llama.cpp's tokenizer.ggml.* arrays equal the reference libraries.

Oracles: tiktoken on LLaMA-3's own BPE file (llama-models), sentencepiece on Mistral's
LLaMA-2-style model (mistral-common), and, for the fixture checkpoints, the embedded
tokenizer.json / tokenizer.model that the arrays were written from.
"""

from __future__ import annotations

import random

import pytest

import bitnet
import tokenizer_assets as assets
from bitnet import UnsupportedError, _core
from bitnet.tokenizer import tokenizer_from_gguf


def _random_texts(n: int, seed: int) -> list[str]:
    """Strings drawn from many scripts, whitespace runs, digits, symbols and emoji."""
    rng = random.Random(seed)
    blocks = [
        (0x20, 0x7E), (0xA0, 0x24F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
        (0x900, 0x97F), (0xE00, 0xE7F), (0x3040, 0x30FF), (0x4E00, 0x4FFF), (0xAC00, 0xAD00),
        (0x1F300, 0x1F64F), (0x2000, 0x206F), (0x2190, 0x22FF),
    ]  # fmt: skip
    pieces = [" ", "  ", "\n", "\n\n", "\t", "\r\n", "'s", "'LL", "123", "4567", "..."]
    out = []
    for _ in range(n):
        parts = []
        for _ in range(rng.randint(1, 12)):
            if rng.random() < 0.3:
                parts.append(rng.choice(pieces))
            else:
                lo, hi = rng.choice(blocks)
                parts.append("".join(chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 6))))
        out.append("".join(parts))
    return out


CORPUS = [
    "Hello world",
    "In the beginning God created the heaven and the earth.",
    "   leading spaces and    runs of   spaces   ",
    "tabs\tand\nnewlines\n\n\nand \r\n windows line ends",
    "Unicode: café naïve Zürich Ελληνικά русский 中文 日本語 한국어 עברית العربية हिन्दी ไทย",
    "Emoji 🙂🚀🎉👩‍👩‍👧 flags 🇫🇷🇯🇵 skin 👍🏽 and symbols ∑∫√∞ © ® ™",
    "combining: e\u0301 a\u0308 n\u0303; zero width\u200bspace; BOM\ufeff; soft\u00adhyphen",
    "numbers 0 1 12 123 1234 12345 3.14159 -42 1e-9 0x1F 1,000,000 ½ ² ٣ ४",
    "code: def f(x):\n    return x ** 2  # square\n\n\tif (a && b) { c->d[i] += 1; }",
    "contractions: I'm you're we'll they've she'd it's DON'T WON'T Y'ALL",
    "",
    " ",
    "a",
    "\n",
    "mixed   \t whitespace \u00a0 nbsp \u3000 ideographic space",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "!!!???...---___===+++***&&&%%%$$$###@@@",
    "URL https://example.com/path?q=1&r=two#frag and email a.b@example.org",
    "ALL CAPS SENTENCE WITH PUNCTUATION, AND MORE!",
    "control\x01chars\x07in\x1btext",
    *_random_texts(120, seed=5),
]


# -- LLaMA-3 (tiktoken BPE) -------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama3(tmp_path_factory):
    model_file = assets.llama3_model_file()
    if model_file is None:
        pytest.skip("llama-models is not installed (pip install --no-deps llama-models)")
    pytest.importorskip("tiktoken")
    path = assets.write_llama3_gguf(tmp_path_factory.mktemp("l3") / "llama3.gguf", model_file)
    return tokenizer_from_gguf(_core.GgufFile(str(path))), assets.llama3_oracle(model_file)


def test_llama3_ids_equal_tiktoken(llama3):
    tok, oracle = llama3
    for text in CORPUS:
        ids = tok.encode(text)
        assert ids == oracle.encode(text, allowed_special="all"), repr(text)
        assert tok.decode(ids) == text
        assert b"".join(tok.token_bytes(i) for i in ids) == text.encode()


def test_llama3_special_tokens(llama3):
    tok, oracle = llama3
    text = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
    ids = tok.encode(text)
    assert ids == oracle.encode(text, allowed_special="all")
    assert ids[:2] == [128000, 128006] and ids[-1] == 128009
    # special=False reads the markers as text, as tiktoken does with nothing allowed.
    assert tok.encode(text, special=False) == oracle.encode(text, disallowed_special=())
    assert tok.bos_id == 128000 and tok.add_bos
    # The file declares no EOT id: <|eot_id|> is still found as an end of turn.
    assert set(tok.eos_ids) == {128001, 128009}
    assert tok.token_bytes(128009) == b""  # control tokens add no text
    assert tok.token_text(128000) == "<|begin_of_text|>"


RARE = "\U0001f1eb\U0001f1f7 \ua66e \U0001d518\U0001d52b\U0001d526\U0001d520"  # flag, rare letters


def test_llama3_split_characters_in_token_bytes(llama3):
    """Some tokens hold part of a UTF-8 character: why streaming works on bytes."""
    tok, _ = llama3
    ids = tok.encode(RARE)
    pieces = [tok.token_bytes(i) for i in ids]
    broken = 0
    for p in pieces:
        try:
            p.decode()
        except UnicodeDecodeError:
            broken += 1
    assert broken > 0
    assert b"".join(pieces).decode() == RARE


# -- SentencePiece (Mistral v0.1, LLaMA-2 style) ----------------------------------------------


@pytest.fixture(scope="module")
def mistral(tmp_path_factory):
    model_file = assets.mistral_model_file()
    if model_file is None:
        pytest.skip("mistral-common is not installed (pip install --no-deps mistral-common)")
    import sentencepiece as spm

    path = assets.write_sentencepiece_gguf(tmp_path_factory.mktemp("sp") / "sp.gguf", model_file)
    oracle = spm.SentencePieceProcessor(model_file=str(model_file))
    return tokenizer_from_gguf(_core.GgufFile(str(path))), oracle


def test_sentencepiece_ids_equal_sentencepiece(mistral):
    tok, oracle = mistral
    for text in CORPUS:
        ids = tok.encode(text)
        assert ids == oracle.encode(text), repr(text)
        assert tok.decode(ids) == oracle.decode(ids)
        # Streaming bytes: the dummy-prefix space comes first, then the text exactly.
        assert b"".join(tok.token_bytes(i) for i in ids) == (" " + text).encode() if text else True


def test_sentencepiece_special_tokens(mistral):
    tok, oracle = mistral
    assert tok.bos_id == 1 and tok.eos_ids == (2,) and tok.add_bos and tok.strip_leading_space
    # Control pieces in text become the token; the text after them starts a new segment
    # with its dummy prefix, as llama.cpp tokenizes chat prompts.
    ids = tok.encode("<s>[INST] Hi [/INST]</s>")
    assert ids == [1, *oracle.encode("[INST] Hi [/INST]"), 2]
    assert tok.encode("<s>hi", special=False) == oracle.encode("<s>hi")


# -- the fixture checkpoints: arrays alone equal the embedded originals -----------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [("2b4t-bf16", "tokenizer.huggingface.json"), ("1bitllm", "tokenizer.sentencepiece.model")],
)
def test_arrays_equal_embedded_tokenizer(converted, tmp_path, name, key):
    import gguf

    from gguf_builders import write_gguf_copy

    original = converted(name, "f16")  # gguf-py rewrites F16; it does not know I2_S
    arrays_only = write_gguf_copy(
        tmp_path / "arrays.gguf",
        original,
        drop_keys=(key,),
        linear_type=gguf.GGMLQuantizationType.F16,
    )
    embedded = tokenizer_from_gguf(_core.GgufFile(str(original)))
    rebuilt = tokenizer_from_gguf(_core.GgufFile(str(arrays_only)))
    assert _core.GgufFile(str(arrays_only)).get(key) is None
    for text in [*CORPUS, "User: hi<|eot_id|>Assistant:", "<s>x</s>"]:
        assert rebuilt.encode(text) == embedded.encode(text), repr(text)
        ids = embedded.encode(text)
        assert rebuilt.decode(ids) == embedded.decode(ids)
    assert (rebuilt.bos_id, rebuilt.eos_ids, rebuilt.add_bos) == (
        embedded.bos_id,
        embedded.eos_ids,
        embedded.add_bos,
    )
    model = bitnet.load(arrays_only)
    assert model.tokenize("Hello") == bitnet.load(original).tokenize("Hello")


def test_unknown_pre_tokenizer_is_a_clear_error(tmp_path):
    import gguf

    path = tmp_path / "odd.gguf"
    w = gguf.GGUFWriter(path, "llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("some-future-model")
    w.add_token_list(["a", "b", "ab"])
    w.add_token_merges(["a b"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(UnsupportedError, match="some-future-model"):
        tokenizer_from_gguf(_core.GgufFile(str(path)))
