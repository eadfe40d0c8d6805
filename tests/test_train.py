"""bitnet.train: BitLinear math, STE gradients, export to transformers and to the engine."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
hfx = pytest.importorskip("hf_fixtures")

import bitnet
from bitnet.convert import ternary
from bitnet.train import BitLinear, BitNetLM, ModelConfig
from bitnet.train.bitlinear import (
    activation_quant,
    binary_weight_quant,
    ternary_weight_quant,
)
from bitnet.train.distill import DistillLoss, make_student, relation_kl
from bitnet.train.export import export_hf
from bitnet.train.trainer import perplexity

PROMPT = "In the beginning God created the heaven and the earth."


def _weights(shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) * (1.5 / shape[1] ** 0.5)


# -- the documented formulas ---------------------------------------------------------------------


def test_ternary_weights_are_absmean_codes_times_beta():
    w = _weights((64, 256))
    codes, beta = hfx.absmean(w.clone())
    assert torch.equal(ternary_weight_quant(w), codes * beta)
    np_codes, np_beta = ternary.absmean_quantize(w.numpy())
    np.testing.assert_array_equal(np_codes, codes.numpy().astype(np.int8))
    assert abs(np_beta - float(beta)) <= 1e-6 * np_beta


def test_binary_weights_are_centred_signs_times_mean_abs():
    w = _weights((64, 256), seed=1) + 0.05  # a non-zero mean, so the centring matters
    q = binary_weight_quant(w)
    beta = w.abs().mean()
    expected = torch.where(w - w.mean() > 0, 1.0, -1.0) * beta
    assert torch.equal(q, expected)
    codes, np_beta = ternary.binarize(w.numpy())  # what the converter writes as Q1_0
    np.testing.assert_array_equal(np.sign(q.numpy()).astype(np.int8), codes)
    assert abs(np_beta - float(beta)) <= 1e-6 * np_beta


def test_activations_are_per_token_absmax_int8():
    x = torch.randn(3, 5, 256)
    q = activation_quant(x)
    s = 127.0 / x.abs().amax(-1, keepdim=True)
    codes = q * s
    np.testing.assert_allclose(codes, codes.round(), atol=1e-4)  # integers...
    assert codes.abs().max() <= 127.0001  # ...in int8 range, absmax token element -> +-127
    assert torch.equal((x * s).round().clamp(-128, 127) / s, q)


def test_bitlinear_equals_transformers_autobitlinear():
    from transformers.integrations.bitnet import AutoBitLinear

    ours = BitLinear(256, 128, "ternary")
    ref = AutoBitLinear(256, 128, bias=False, online_quant=True)
    with torch.no_grad():
        ours.weight.copy_(_weights((128, 256), seed=2))
        ref.weight.copy_(ours.weight)
    x = torch.randn(4, 7, 256)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-6, atol=1e-6)
    y = torch.nn.functional.linear(activation_quant(x), ternary_weight_quant(ours.weight))
    torch.testing.assert_close(ours(x), y, rtol=0, atol=0)


@pytest.mark.parametrize("quant", ["ternary", "binary"])
def test_gradients_flow_straight_through(quant):
    layer = BitLinear(256, 64, quant)
    with torch.no_grad():
        layer.weight.copy_(_weights((64, 256), seed=3))
    x = torch.randn(5, 256, requires_grad=True)
    g = torch.randn(5, 64)
    (layer(x) * g).sum().backward()
    # STE: d/dW = g^T Q(x) and d/dx = g Q(W), as if the quantizers were the identity.
    wq = layer.quantized_weight().detach()
    torch.testing.assert_close(layer.weight.grad, g.T @ activation_quant(x.detach()))
    torch.testing.assert_close(x.grad, g @ wq)
    assert layer.weight.grad.abs().sum() > 0


# -- the model, exported to transformers and converted for the engine ------------------------------


def _tiny(vocab: int, quant: str, seed: int) -> BitNetLM:
    cfg = ModelConfig(
        vocab_size=vocab,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        quant=quant,  # type: ignore[arg-type]
    )
    model = BitNetLM(cfg)
    hfx._init_weights(model, seed)  # formats.md section 5: every code and norm matters
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """quant -> (our model, HF checkpoint dir, GGUF path) for a tiny ternary and binary model."""
    root = tmp_path_factory.mktemp("train")
    vocab = hfx.write_spm_tokenizer(root / "tok")
    out = {}
    for quant, seed in (("ternary", 11), ("binary", 12)):
        model = _tiny(vocab, quant, seed)
        ckpt = export_hf(model, root / quant, tokenizer_dir=root / "tok")
        gguf = bitnet.convert(ckpt, root / f"{quant}.gguf", progress=False)
        out[quant] = (model, ckpt, gguf)
    return out


def _ids(engine: bitnet.Model) -> list[int]:
    return engine.tokenize(PROMPT)


def test_export_loads_in_transformers_with_our_logits(exported):
    model, ckpt, gguf = exported["ternary"]
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["architectures"] == ["BitNetForCausalLM"] and cfg["tie_word_embeddings"]
    ref = hfx._load_reference(ckpt)
    assert type(ref).__name__ == "BitNetForCausalLM"
    ids = _ids(bitnet.load(gguf))
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0].numpy()
    np.testing.assert_allclose(ours, hfx.reference_logits(ref, ids), rtol=1e-4, atol=1e-4)


def test_engine_matches_transformers_on_exported_model(exported):
    _, ckpt, gguf = exported["ternary"]
    engine = bitnet.load(gguf)
    ids = _ids(engine)
    hfx.assert_logits_close(
        engine.logits(ids), hfx.reference_logits(hfx._load_reference(ckpt), ids)
    )


def test_binary_export_converts_to_sign_bits(exported):
    model, ckpt, gguf = exported["binary"]
    quant = json.loads((ckpt / "config.json").read_text())["quantization_config"]
    assert quant["weight_quant"] == "binary"
    engine = bitnet.load(gguf)
    infos = engine._core.linear_info()
    assert len(infos) == 2 * 7
    layer = model.model.layers[0].self_attn.q_proj
    codes, _ = engine._core.linear_codes("blk.0.attn_q.weight")
    assert set(np.unique(codes).tolist()) == {-1, 1}
    ref = torch.sign(layer.quantized_weight()).detach().numpy().astype(np.int8)
    np.testing.assert_array_equal(codes, ref)
    ids = _ids(engine)
    with torch.no_grad():
        ours = model(torch.tensor([ids]))[0].numpy()
    hfx.assert_logits_close(engine.logits(ids), ours)


def test_training_perplexity_protocol_equals_engine(exported):
    model, _, gguf = exported["ternary"]
    engine = bitnet.load(gguf, n_ctx=64)
    text = " ".join(hfx.CORPUS[:3])
    ids = engine.tokenize(text)
    ours = perplexity(model, ids, window=32, stride=16)
    theirs = engine.perplexity(text, window=32, stride=16)
    assert abs(ours - theirs) <= 0.02 * theirs


# -- BitDistill ---------------------------------------------------------------------------------


def test_relation_kl_is_zero_for_equal_and_positive_otherwise():
    q = torch.randn(2, 4, 9, 16)
    assert float(relation_kl(q, q)) == pytest.approx(0.0, abs=1e-6)
    assert float(relation_kl(q, torch.randn(2, 4, 9, 16))) > 0.01


def test_bitdistill_student_and_loss():
    teacher = BitNetLM(
        ModelConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=16,
            quant="none",
            sub_norms=False,
        )
    ).eval()
    teacher.requires_grad_(False)  # as bitdistill() freezes it
    student = make_student(teacher)
    assert all(p.requires_grad for p in student.parameters())
    assert student.cfg.sub_norms and student.cfg.quant == "ternary"
    assert not teacher.cfg.sub_norms and teacher.cfg.quant == "none"
    names = {n for n, _ in student.named_parameters()}
    assert "model.layers.1.self_attn.attn_sub_norm.weight" in names
    assert "model.layers.1.mlp.ffn_sub_norm.weight" in names
    inp = torch.randint(0, 64, (2, 16))
    loss_fn = DistillLoss(teacher, 1, 1, 1.0, 1.0, 2.0)
    _, parts = loss_fn(student, inp, inp)
    assert parts["ld"] == 0.0 and parts["ad"] == 0.0
    loss, parts = loss_fn(student, inp, inp)
    assert parts["ld"] > 0 and parts["ad"] > 0
    loss.backward()
    grad = student.model.layers[1].self_attn.q_proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0  # the relation loss reaches layer 1's Q
    assert all(p.grad is None for p in teacher.parameters())
