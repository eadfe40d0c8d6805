"""Our files are standard GGUF, and GGUF files written by others (gguf-py) run in our engine."""

from __future__ import annotations

import gguf
import numpy as np
import pytest

import bitnet
from gguf_builders import write_gguf_copy

pytest.importorskip("torch")


@pytest.mark.parametrize(
    "qtype", [gguf.GGMLQuantizationType.TQ2_0, gguf.GGMLQuantizationType.TQ1_0]
)
def test_file_written_by_gguf_py_gives_the_same_logits(converted, tmp_path, qtype):
    # 2B4T-packed: beta comes from a bf16 weight_scale, exactly representable in fp16, so our
    # file stores it in the TQ blocks (no scale tensor) and gguf-py's requantization of the
    # dequantized values (d = max|x| = beta) reproduces every block bit for bit.
    ours = converted("2b4t-packed", qtype.name.lower())
    theirs = write_gguf_copy(tmp_path / "theirs.gguf", ours, linear_type=qtype)
    ids = list(range(3, 40, 3))
    a = bitnet.load(ours).logits(ids)
    b = bitnet.load(theirs).logits(ids)
    np.testing.assert_array_equal(a, b)


def test_file_with_scale_tensors_matches_requantized_copy(converted, tmp_path):
    # 2B4T master weights: beta is a float32, kept exactly in llama.cpp's optional
    # "<name>.scale" tensors. gguf-py's copy folds it into fp16 block scales instead: the same
    # model up to a 2^-11 relative change of each scale.
    ours = converted("2b4t-bf16")
    reader = gguf.GGUFReader(ours)
    names = {t.name for t in reader.tensors}
    assert "blk.0.attn_q.scale" in names
    q = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    d = np.asarray(q.data).reshape(-1, 66)[:, 64:].copy().view(np.float16)  # block scales
    assert (d == 1.0).all()
    theirs = write_gguf_copy(tmp_path / "theirs.gguf", ours)
    ids = list(range(3, 40, 3))
    a = bitnet.load(ours).logits(ids)
    b = bitnet.load(theirs).logits(ids)
    cos = (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() > 0.99


@pytest.mark.parametrize("layout", ["2b4t-packed", "2b4t-bf16", "llama-bitlinear"])
def test_gguf_py_reads_our_files(converted, layout):
    # (Files with I2_S fallback tensors, like the 1bitLLM fixture's ffn_down of row length 384,
    # are not readable by gguf-py, which does not know bitnet.cpp's type.)
    path = converted(layout, "tq2_0", "f16")
    reader = gguf.GGUFReader(path)
    arch = reader.fields["general.architecture"].contents()
    assert arch == ("llama" if layout == "llama-bitlinear" else "bitnet")
    model = bitnet.load(path)
    c = model.config
    assert reader.fields[f"{arch}.block_count"].contents() == c["n_layers"]
    assert reader.fields[f"{arch}.embedding_length"].contents() == c["n_embd"]
    types = {t.name: t.tensor_type for t in reader.tensors}
    assert types["token_embd.weight"] == gguf.GGMLQuantizationType.F16
    assert types["output_norm.weight"] == gguf.GGMLQuantizationType.F32
    assert types["blk.0.ffn_down.weight"] == gguf.GGMLQuantizationType.TQ2_0
    # Every TQ2_0 tensor dequantizes (with gguf-py) to codes x scale of our engine's view.
    for t in reader.tensors:
        if t.tensor_type != gguf.GGMLQuantizationType.TQ2_0:
            continue
        values = gguf.quants.dequantize(t.data, t.tensor_type).reshape(int(t.shape[1]), -1)
        codes, scales = model._core.linear_codes(t.name)
        scale_t = next(
            (s for s in reader.tensors if s.name == t.name.replace(".weight", ".scale")), None
        )
        extra = float(np.asarray(scale_t.data)[0]) if scale_t is not None else 1.0
        np.testing.assert_allclose(values * extra, codes * scales[:, None], rtol=1e-6)


def test_llama_files_carry_llama_cpp_conventions(converted):
    reader = gguf.GGUFReader(converted("llama-bitlinear"))
    names = {t.name for t in reader.tensors}
    assert "output.weight" in names  # untied
    assert not any(n.endswith(".scale") for n in names)  # llama.cpp's llama graph has none
    assert reader.fields["tokenizer.ggml.model"].contents() == "gpt2"
    assert reader.fields["tokenizer.ggml.pre"].contents() == "llama-bpe"


def test_tokenizer_payload(converted):
    from bitnet import _core

    f = _core.GgufFile(str(converted("1bitllm")))
    assert f.get("tokenizer.ggml.model") == "llama"
    tokens = f.get("tokenizer.ggml.tokens")
    assert len(tokens) == bitnet.load(converted("1bitllm")).n_vocab
    assert tokens[-1] == f"[PAD{len(tokens) - 1}]"  # padded like llama.cpp
    assert len(f.get("tokenizer.ggml.scores")) == len(tokens)
    assert f.get("tokenizer.ggml.bos_token_id") == 1
    assert f.get("tokenizer.ggml.eos_token_id") == 2
    assert f.value_type("tokenizer.sentencepiece.model") == "array[uint8]"
    assert f.get("blk.0.ffn_down.weight") is None
    types = {t["name"]: t["type_name"] for t in f.tensors()}
    assert types["blk.0.ffn_down.weight"] == "I2_S"  # row length 384: the TQ fallback
    assert types["blk.0.ffn_up.weight"] == "TQ2_0"
    bpe = gguf.GGUFReader(converted("2b4t-bf16")).fields
    assert "tokenizer.huggingface.json" in bpe
    assert len(bpe["tokenizer.ggml.merges"].contents()) > 0
    assert "eot_id" in bpe["tokenizer.chat_template"].contents()
