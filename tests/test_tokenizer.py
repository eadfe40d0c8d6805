"""Tokenization from the GGUF file equals the reference libraries on the source tokenizer."""

from __future__ import annotations

import pytest

import bitnet

TEXTS = [
    "Hello world",
    "In the beginning God created the heaven and the earth.",
    "   leading spaces and    runs of   spaces   ",
    "tabs\tand\nnewlines\n\n\nand \r\n windows line ends",
    "Unicode: café naïve Zürich Ελληνικά русский 中文 日本語 한국어",
    "Emoji 🙂🚀🎉👩‍👩‍👧 and symbols ∑∫√∞ © ®",
    "numbers 0 1 12 123 1234 12345 3.14159 -42",
    "code: def f(x):\n    return x ** 2  # square",
    "",
    " ",
    "a",
    "mixed   \t whitespace \u00a0 nbsp",
]


@pytest.fixture(scope="module")
def bpe_model(converted):
    return bitnet.load(converted("2b4t-bf16"))


@pytest.fixture(scope="module")
def spm_model(converted):
    return bitnet.load(converted("1bitllm"))


@pytest.mark.parametrize("text", TEXTS)
def test_bpe_matches_tokenizers(hf_models, bpe_model, text):
    from tokenizers import Tokenizer

    ref = Tokenizer.from_file(str(hf_models["2b4t-bf16"].path / "tokenizer.json"))
    assert bpe_model.tokenize(text) == ref.encode(text).ids  # BOS added like the original
    ids = ref.encode(text, add_special_tokens=False).ids
    assert bpe_model.tokenize(text, add_bos=False) == ids
    assert bpe_model.detokenize(ids) == ref.decode(ids, skip_special_tokens=False) == text


def test_bpe_special_tokens_in_text(hf_models, bpe_model):
    from tokenizers import Tokenizer

    ref = Tokenizer.from_file(str(hf_models["2b4t-bf16"].path / "tokenizer.json"))
    text = "User: hi<|eot_id|>Assistant: hello<|end_of_text|>"
    ids = bpe_model.tokenize(text, add_bos=False)
    assert ids == ref.encode(text, add_special_tokens=False).ids
    assert ref.token_to_id("<|eot_id|>") in ids
    assert bpe_model.tokenizer.bos_id == ref.token_to_id("<|begin_of_text|>")
    assert set(bpe_model.tokenizer.eos_ids) == {
        ref.token_to_id("<|end_of_text|>"),
        ref.token_to_id("<|eot_id|>"),
    }


@pytest.mark.parametrize("text", TEXTS)
def test_sentencepiece_matches(hf_models, spm_model, text):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(hf_models["1bitllm"].path / "tokenizer.model"))
    ids = sp.encode(text)
    assert spm_model.tokenize(text, add_bos=False) == ids
    assert spm_model.tokenize(text) == [1, *ids]  # <s> first, as the model's config says
    assert spm_model.detokenize(ids) == sp.decode(ids)


def test_sentencepiece_byte_fallback_round_trip(spm_model):
    text = "rare: ☃ ⛄ 🦄 ꙮ"
    assert spm_model.detokenize(spm_model.tokenize(text, add_bos=False)) == text
