"""Each tokenizer key wrong in type, length or range fails bitnet.load with a FormatError that
names the file and the key (expected vs found), never later at generate time and never as an
IndexError, TypeError or ValueError from deep inside."""

from __future__ import annotations

from pathlib import Path

import pytest

import bitnet
from bitnet import FormatError, UnsupportedError
from gguf_edit import T, Value, edit_gguf

ROOT = Path(__file__).parents[1]
# Tiny models of the fuzz corpus (tests/fuzz/make_seeds.py): gguf-py rewrites them in
# milliseconds, where the bundled model's 3072-token arrays take seconds.
SPM = ROOT / "tests" / "fuzz" / "corpus" / "f32-latent-spm.gguf"  # SentencePiece arrays
BPE = ROOT / "tests" / "fuzz" / "corpus" / "f16-llama-bpe.gguf"  # BPE arrays with merges
N_SPM = 24
N_BPE = 24

ARR, STR, I32, U32, F32, U8, BOOL = T.ARRAY, T.STRING, T.INT32, T.UINT32, T.FLOAT32, T.UINT8, T.BOOL
TOKENS = "tokenizer.ggml.tokens"
TYPES = "tokenizer.ggml.token_type"
SCORES = "tokenizer.ggml.scores"
MERGES = "tokenizer.ggml.merges"


def load_error(tmp_path: Path, base: Path, keys: dict[str, Value]) -> BaseException:
    path = edit_gguf(base, tmp_path / "bad.gguf", set_keys=keys)
    with pytest.raises(FormatError) as info:
        bitnet.load(path, n_ctx=64)
    message = str(info.value)
    assert str(path) in message, message
    return info.value


def spm_tokens() -> list[str]:
    return [str(t) for t in bitnet.load(SPM, n_ctx=16).metadata.get(TOKENS)]


# (id, key, value, text the message must hold): every case on the SentencePiece model.
SPM_CASES = [
    ("tokens-not-array", TOKENS, ("abc", STR), "should be an array of strings, found string"),
    ("tokens-of-ints", TOKENS, ([1, 2], ARR, I32), "found array[int32]"),
    ("types-not-array", TYPES, (1, I32), "should be an array of integers, found int32"),
    ("types-of-floats", TYPES, ([1.0] * N_SPM, ARR, F32), "found array[float32]"),
    ("types-short", TYPES, ([1] * 10, ARR, I32), "has 10 entries, expected 24"),
    ("types-long", TYPES, ([1] * (N_SPM + 1), ARR, I32), "has 25 entries, expected 24"),
    ("types-out-of-range", TYPES, ([1] * 5 + [9] + [1] * (N_SPM - 6), ARR, I32), "token_type[5] is 9"),
    ("types-negative", TYPES, ([-1] + [1] * (N_SPM - 1), ARR, I32), "token_type[0] is -1"),
    ("scores-not-array", SCORES, (0.5, F32), "should be an array of numbers, found float32"),
    ("scores-of-strings", SCORES, (["a"] * N_SPM, ARR, STR), "found array[string]"),
    ("scores-short", SCORES, ([0.0] * 3, ARR, F32), "has 3 entries, expected 24"),
    ("scores-nan", SCORES, ([0.0] * 7 + [float("nan")] + [0.0] * (N_SPM - 8), ARR, F32), "scores[7] is NaN"),
    ("bos-string", "tokenizer.ggml.bos_token_id", ("1", STR), "should be an integer, found string"),
    ("bos-float", "tokenizer.ggml.bos_token_id", (1.0, F32), "should be an integer, found float32"),
    ("bos-out-of-range", "tokenizer.ggml.bos_token_id", (N_SPM, U32), "is 24, expected a token id in [0, 24)"),
    ("eos-out-of-range", "tokenizer.ggml.eos_token_id", (10**6, U32), "is 1000000, expected a token id"),
    ("eos-bool", "tokenizer.ggml.eos_token_id", (True, BOOL), "should be an integer, found bool"),
    ("eot-out-of-range", "tokenizer.ggml.eot_token_id", (N_SPM + 5, I32), "is 29"),
    ("eom-string", "tokenizer.ggml.eom_token_id", ("x", STR), "found string"),
    ("unknown-out-of-range", "tokenizer.ggml.unknown_token_id", (N_SPM, U32), "unknown_token_id' is 24"),
    ("padding-float", "tokenizer.ggml.padding_token_id", (0.0, F32), "found float32"),
    ("add-bos-int", "tokenizer.ggml.add_bos_token", (1, U8), "should be a bool, found uint8"),
    ("add-eos-string", "tokenizer.ggml.add_eos_token", ("no", STR), "should be a bool, found string"),
    ("add-space-prefix-int", "tokenizer.ggml.add_space_prefix", (1, I32), "should be a bool"),
    ("model-int", "tokenizer.ggml.model", (1, U32), "should be a string, found uint32"),
    ("pre-array", "tokenizer.ggml.pre", (["x"], ARR, STR), "should be a string, found array[string]"),
    ("chat-template-int", "tokenizer.chat_template", (3, U32), "should be a string, found uint32"),
    ("sp-model-strings", "tokenizer.sentencepiece.model", (["x"], ARR, STR), "should be an array of bytes"),
    ("sp-model-garbage", "tokenizer.sentencepiece.model", (list(b"\xff" * 64), ARR, U8), "model of key 'tokenizer.sentencepiece.model' does not load"),
    ("hf-json-int", "tokenizer.huggingface.json", (3, U32), "should be a string, found uint32"),
    ("hf-json-invalid", "tokenizer.huggingface.json", ("{not json", STR), "tokenizer.huggingface.json does not load"),
    ("hf-json-list", "tokenizer.huggingface.json", ("[1, 2]", STR), "should be a JSON object, found list"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("key", "value", "expected"), [c[1:] for c in SPM_CASES], ids=[c[0] for c in SPM_CASES]
)
def test_spm_metadata_errors(tmp_path, key, value, expected):  # fmt: skip
    err = load_error(tmp_path, SPM, {key: value})
    assert expected in str(err), str(err)
    assert key.split(".")[-1] in str(err) or "SentencePiece" in str(err) or "json" in str(err)


def test_byte_token_must_be_spelled_as_a_byte(tmp_path):
    tokens = spm_tokens()
    types = [int(t) for t in bitnet.load(SPM, n_ctx=16).metadata.get(TYPES)]
    assert 6 not in types
    i = types.index(1)  # a normal token, declared BYTE
    types[i] = 6
    err = load_error(tmp_path, SPM, {TYPES: (types, ARR, I32)})
    assert f"tokenizer.ggml.tokens[{i}] = {tokens[i]!r} has type BYTE" in str(err)
    assert "<0xNN>" in str(err)


def test_more_tokens_than_embeddings(tmp_path):
    tokens = [*spm_tokens(), "extra"]
    err = load_error(tmp_path, SPM, {TOKENS: (tokens, ARR, STR)})
    assert "has 25 entries, more than the model's 24 token embeddings" in str(err)


BPE_CASES = [
    ("merges-not-array", MERGES, ("a b", STR), "should be an array of strings, found string"),
    ("merges-one-token", MERGES, (["ab"], ARR, STR), "merges[0] = 'ab' is not 'left right'"),
    ("merges-empty-side", MERGES, (["a b", " b"], ARR, STR), "merges[1] = ' b'"),
    ("merges-unknown-tokens", MERGES, (["zz yy"], ARR, STR), "BPE merges do not fit the token list"),
    ("types-short", TYPES, ([1, 1], ARR, I32), "has 2 entries, expected 24"),
    ("bos-out-of-range", "tokenizer.ggml.bos_token_id", (N_BPE, U32), "is 24, expected a token id in [0, 24)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("key", "value", "expected"), [c[1:] for c in BPE_CASES], ids=[c[0] for c in BPE_CASES]
)
def test_bpe_metadata_errors(tmp_path, key, value, expected):  # fmt: skip
    err = load_error(tmp_path, BPE, {key: value})
    assert expected in str(err), str(err)


def test_bpe_without_merges(tmp_path):
    path = edit_gguf(BPE, tmp_path / "bad.gguf", drop_keys=(MERGES,))
    with pytest.raises(FormatError, match=r"needs tokenizer\.ggml\.merges"):
        bitnet.load(path, n_ctx=16)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("tokenizer.ggml.eos_token_id", (-1, I32)),  # llama.cpp's "no such token"
        ("tokenizer.ggml.padding_token_id", (0xFFFFFFFF, U32)),  # -1 written unsigned
    ],
)
def test_null_token_ids_mean_none(tmp_path, key, value):
    path = edit_gguf(SPM, tmp_path / "ok.gguf", set_keys={key: value})
    model = bitnet.load(path, n_ctx=64)
    assert model.generate("In the beginning", max_tokens=2, temperature=0) is not None


def test_unknown_tokenizer_model_fails_when_used_not_at_load(tmp_path):
    # A model without a usable tokenizer still runs on token ids.
    path = edit_gguf(
        BPE, tmp_path / "odd.gguf", set_keys={"tokenizer.ggml.model": ("wordpiece", STR)}
    )
    model = bitnet.load(path, n_ctx=16)
    assert model.logits([1, 2]).shape == (2, N_BPE)
    with pytest.raises(UnsupportedError, match="'wordpiece' is not supported"):
        model.tokenize("hello")


@pytest.mark.parametrize("offset", [0, 1])
def test_embedded_sentencepiece_piece_not_utf8(tmp_path, offset):
    """The bundled model embeds its SentencePiece model; a piece with bytes that are not UTF-8
    (found by a mutation campaign) is a FormatError at load, not a UnicodeDecodeError."""
    data = bytearray((ROOT / "models" / "bitnet-kjv-5m-tq2_0.gguf").read_bytes())
    at = data.index(b"\xe2\x96\x81the", data.index(b"tokenizer.sentencepiece.model"))
    data[at + offset] = 0xFF if offset == 0 else 0x41
    path = tmp_path / "m.gguf"
    path.write_bytes(bytes(data))
    with pytest.raises(
        FormatError, match=r"key 'tokenizer\.sentencepiece\.model'.*not valid UTF-8"
    ):
        bitnet.load(path)
