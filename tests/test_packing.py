"""Bit layouts and quantization, exact against independent statements of the math.

Independent references: plain-loop statements of the TQ2_0, TQ1_0, I2_S and Q1_0 layouts written
from their specifications (ggml's block structs and dequantizers), and transformers'
pack_weights/unpack_weights.
"""

from __future__ import annotations

import gguf
import numpy as np
import pytest

import bitnet
from bitnet import _core
from bitnet.convert import ternary

RNG = np.random.default_rng(0)


def random_codes(rows: int, k: int, p_zero: float = 0.3) -> np.ndarray:
    p = [(1 - p_zero) / 2, p_zero, (1 - p_zero) / 2]
    return RNG.choice(np.array([-1, 0, 1], dtype=np.int8), size=(rows, k), p=p)


def tq2_0_spec(codes: np.ndarray, d: float) -> np.ndarray:
    """TQ2_0 written from ggml's block_tq2_0 as plain loops: per 256-block, byte 32h + j holds
    the codes 128h + 32k + j (k = 0..3) at bits 2k, each stored as code + 1; then fp16 d."""
    rows, k = codes.shape
    out = np.zeros((rows, k // 256 * 66), dtype=np.uint8)
    for r in range(rows):
        for b in range(k // 256):
            block = codes[r, 256 * b : 256 * (b + 1)]
            for h in range(2):
                for j in range(32):
                    byte = 0
                    for q in range(4):
                        byte |= int(block[128 * h + 32 * q + j] + 1) << (2 * q)
                    out[r, 66 * b + 32 * h + j] = byte
            scale = np.float16(d) if block.any() else np.float16(0)  # all-zero block: d = 0
            out[r, 66 * b + 64 : 66 * b + 66] = np.array([scale]).view(np.uint8)
    return out


def tq1_0_codes(data: np.ndarray, rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Codes and block scales of TQ1_0 bytes, from ggml's dequantize_row_tq1_0 as plain loops:
    qs[0:32] hold 5 trits each (codes n*32 + m), qs[32:48] 5 trits (160 + n*16 + m), qh[0:4]
    4 trits (240 + n*4 + m); trit n of byte q is ((q * 3^n) mod 256) * 3 >> 8."""
    codes = np.zeros((rows, k), dtype=np.int8)
    scales = np.zeros((rows, k // 256), dtype=np.float32)
    for r in range(rows):
        for b in range(k // 256):
            block = data[r, 54 * b : 54 * (b + 1)]
            out = codes[r, 256 * b : 256 * (b + 1)]
            for n in range(5):
                for m in range(32):
                    out[n * 32 + m] = ((int(block[m]) * 3**n) % 256 * 3 >> 8) - 1
                for m in range(16):
                    out[160 + n * 16 + m] = ((int(block[32 + m]) * 3**n) % 256 * 3 >> 8) - 1
            for n in range(4):
                for m in range(4):
                    out[240 + n * 4 + m] = ((int(block[48 + m]) * 3**n) % 256 * 3 >> 8) - 1
            scales[r, b] = block[52:54].view(np.float16)[0]
    return codes, scales


# beta values that fp16 represents exactly, and one it rounds (stored as fp16(beta))
BETAS = [1.0, 0.5, 0.0322265625, 3.75, 0.1]


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("shape", [(1, 256), (3, 512), (2, 768)])
def test_tq2_0_layout_follows_the_spec(shape, beta):
    codes = random_codes(*shape)
    codes[0, :256] = 0  # an all-zero block
    np.testing.assert_array_equal(ternary.pack_tq2_0(codes, beta), tq2_0_spec(codes, beta))


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("shape", [(1, 256), (3, 512), (2, 768)])
def test_tq1_0_layout_follows_the_spec(shape, beta):
    codes = random_codes(*shape)
    codes[-1, -256:] = 0
    data = ternary.pack_tq1_0(codes, beta)
    assert data.shape == (shape[0], shape[1] // 256 * 54)
    back, scales = tq1_0_codes(data, *shape)
    np.testing.assert_array_equal(back, codes)
    nonzero = codes.reshape(shape[0], -1, 256).any(axis=2)
    np.testing.assert_array_equal(scales, np.where(nonzero, np.float32(np.float16(beta)), 0))


@pytest.mark.parametrize("fill", [-1, 0, 1])
def test_tq_extremes_round_trip(fill):
    codes = np.full((2, 512), fill, dtype=np.int8)
    for pack, qtype in (
        (ternary.pack_tq2_0, gguf.GGMLQuantizationType.TQ2_0),
        (ternary.pack_tq1_0, gguf.GGMLQuantizationType.TQ1_0),
    ):
        values = gguf.quants.dequantize(pack(codes, 0.25), qtype)
        np.testing.assert_array_equal(values, codes.astype(np.float32) * 0.25)


def test_tq_blocks_with_zero_scale_load_like_scaled_ones(converted, tmp_path):
    """An all-zero block gets d = 0 from gguf-py (d = beta before): the engine reads both
    the same, because a zero block contributes nothing whatever its scale."""
    from gguf_builders import write_gguf_copy

    src = converted("2b4t-packed", "tq2_0", "f16")
    reader = gguf.GGUFReader(src)
    q = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    rows = int(q.shape[1])
    data = np.array(q.data, dtype=np.uint8).reshape(rows, -1)
    values = gguf.quants.dequantize(data, gguf.GGMLQuantizationType.TQ2_0)
    beta = float(np.abs(values).max())
    codes = np.rint(values / beta).astype(np.int8)
    codes[0, :256] = 0
    variants = []
    for zero_scale in (True, False):
        packed = ternary.pack_tq2_0(codes, beta)
        if not zero_scale:
            packed[0, 64:66] = np.array([np.float16(beta)]).view(np.uint8)
        out = write_gguf_copy(tmp_path / f"v{zero_scale}.gguf", src, replace={q.name: packed})
        variants.append(bitnet.load(out).logits(list(range(3, 30, 3))))
    np.testing.assert_array_equal(variants[0], variants[1])


def test_i2_s_layout_follows_the_spec():
    codes = random_codes(4, 384)  # 384 = 3 blocks of 128 per row, blocks follow the flat order
    data = ternary.pack_i2_s(codes, 0.123)
    flat = codes.reshape(-1)
    n = flat.size
    assert data.size == n // 4 + 32
    for b in range(n // 128):
        for p in range(32):
            byte = 0
            for k in range(4):  # value 128b + 32k + p at bits 6 - 2k, code = w + 1
                byte |= int(flat[128 * b + 32 * k + p] + 1) << (6 - 2 * k)
            assert data[32 * b + p] == byte
    assert data[n // 4 : n // 4 + 4].view(np.float32)[0] == np.float32(0.123)
    back, scale = ternary.unpack_i2_s(data, codes.shape)
    np.testing.assert_array_equal(back, codes)
    assert scale == np.float32(0.123)


def test_q1_0_layout_follows_the_spec():
    signs = RNG.choice(np.array([-1, 1], dtype=np.int8), size=(3, 256))
    data = ternary.pack_q1_0(signs, 0.5)
    assert data.shape == (3, 2 * 18)
    for r in range(3):
        for b in range(2):
            block = data[r, 18 * b : 18 * b + 18]
            assert block[:2].view(np.float16)[0] == np.float16(0.5)  # d first
            for j in range(128):  # bit j: byte j/8, bit j%8, 1 = +d
                bit = (block[2 + j // 8] >> (j % 8)) & 1
                assert bit == (signs[r, 128 * b + j] > 0)
    back, d = ternary.unpack_q1_0(data, 3, 256)
    np.testing.assert_array_equal(back, signs)
    assert (d == 0.5).all()


def test_hf_packing_matches_transformers():
    torch = pytest.importorskip("torch")
    from transformers.integrations.bitnet import pack_weights, unpack_weights

    codes = random_codes(64, 48)
    packed = pack_weights(torch.from_numpy(codes.copy()).to(torch.int8)).numpy()
    np.testing.assert_array_equal(ternary.hf_unpack(packed, 64), codes)
    unpacked = unpack_weights(torch.from_numpy(packed), dtype=torch.float32).numpy()
    np.testing.assert_array_equal(ternary.hf_unpack(packed, 64), unpacked.astype(np.int8))


def test_permute_rope_rows_matches_llama_cpp_convention():
    heads, head_dim = 3, 8
    w = np.arange(heads * head_dim)[:, None] * np.ones((1, 2))
    p = ternary.permute_rope_rows(w, heads)
    for h in range(heads):
        for i in range(head_dim // 2):
            for j in range(2):  # new row 2i + j is old row j * d/2 + i
                assert p[h * head_dim + 2 * i + j, 0] == h * head_dim + j * head_dim // 2 + i


# -- activation and weight quantization: C++ and numpy against the statement of the math ------


def act_quant_reference(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x_q = round_half_even(x * 127 / max(max|x|, 1e-5)), in float32 like torch."""
    x = x.astype(np.float32)
    s = np.float32(127.0) / np.maximum(np.abs(x).max(axis=1), np.float32(1e-5))
    q = np.clip(np.rint(x * s[:, None]), -128, 127).astype(np.int8)
    return q, s.astype(np.float32)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 31, 127, 128, 129, 256, 1000, 2560])
def test_quantize_i8_exact(n):
    x = RNG.standard_normal((5, n)).astype(np.float32) * np.float32(3.0)
    q, s, total = _core.quantize_i8(x)
    rq, rs = act_quant_reference(x)
    np.testing.assert_array_equal(q, rq)
    np.testing.assert_array_equal(s, rs)
    np.testing.assert_array_equal(total, rq.astype(np.int64).sum(axis=1))


def test_quantize_i8_ties_round_half_to_even():
    # max|x| = 127 gives s = 1, so x * s lands exactly on .5 ties.
    x = np.array([[127.0, 0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 126.5]], dtype=np.float32)
    q, s, _ = _core.quantize_i8(x)
    assert s[0] == 1.0
    np.testing.assert_array_equal(q[0], [127, 0, 2, 2, 0, -2, -2, 126])


def test_quantize_i8_degenerate_rows():
    x = np.zeros((1, 16), dtype=np.float32)
    q, s, total = _core.quantize_i8(x)
    assert (q == 0).all() and s[0] == np.float32(127.0) / np.float32(1e-5) and total[0] == 0
    x = np.array([[1.0, np.nan, -1.0, 0.25]], dtype=np.float32)
    q, _, _ = _core.quantize_i8(x)  # NaN becomes 0, never undefined behaviour
    np.testing.assert_array_equal(q[0], [127, 0, -127, 32])


def test_absmean_cpp_numpy_torch_agree():
    torch = pytest.importorskip("torch")
    w = (RNG.standard_normal((48, 64)) * 0.02).astype(np.float32)
    w[0, :4] = [0.0, 1e-9, -1e-9, 0.0]
    codes_cpp, beta_cpp = _core.absmean_ternarize(w)
    codes_np, beta_np = ternary.absmean_quantize(w)
    wt = torch.from_numpy(w)
    s = 1.0 / wt.abs().mean().clamp_(min=1e-5)
    codes_t = (wt * s).round().clamp(-1, 1).numpy().astype(np.int8)
    np.testing.assert_array_equal(codes_cpp, codes_t)
    np.testing.assert_array_equal(codes_np, codes_t)
    assert beta_cpp == pytest.approx(float(1.0 / s), rel=1e-6)
    assert beta_np == pytest.approx(float(1.0 / s), rel=1e-6)


def test_absmean_ties_round_half_to_even():
    # mean|w| = 1 exactly, so w * s = w: 0.5 -> 0 and 1.5 -> 2 -> clamp 1, -0.5 -> 0
    w = np.array([[0.5, 1.5, -0.5, 1.0, 1.0, 1.5]], dtype=np.float32)
    codes, beta = ternary.absmean_quantize(w)
    np.testing.assert_array_equal(codes[0], [0, 1, 0, 1, 1, 1])
    assert beta == 1.0
    codes_cpp, _ = _core.absmean_ternarize(w)
    np.testing.assert_array_equal(codes_cpp, codes)


def test_binarize_follows_the_paper():
    w = np.array([[0.3, -0.1, 0.2, 0.0]], dtype=np.float32)  # mean 0.1
    codes, beta = ternary.binarize(w)
    np.testing.assert_array_equal(codes[0], [1, -1, 1, -1])  # sign(w - 0.1), 0 -> -1
    assert beta == pytest.approx(0.15)
