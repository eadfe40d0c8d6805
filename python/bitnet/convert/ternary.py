"""The numpy statement of BitNet's weight math and of the packed layouts bitnet writes.

Quantization (BitNet b1.58, per tensor, as in the reference implementations):
    s = 1 / max(mean|W|, 1e-5);   T = clip(round_half_even(W * s), -1, 1);   W ~ T / s
Binarization (original 1-bit BitNet):
    alpha = mean(W);   B = +1 where W - alpha > 0 else -1;   beta = mean|W|;   W ~ beta * B

Layouts (docs/format.md has byte diagrams):
    hf_unpack   Hugging Face 2-bit packing along the output axis (transformers' unpack_weights;
                written here because transformers is not a runtime dependency)
    tq2_0       GGUF TQ2_0, blocks of 256: {uint8 qs[64]; fp16 d}       -- by gguf.quants
    tq1_0       GGUF TQ1_0, blocks of 256: {uint8 qs[48]; uint8 qh[4]; fp16 d} -- by gguf.quants
    i2_s        bitnet.cpp I2_S (x86): 4 codes per byte over the flattened tensor + float32
                scale (gguf-py has no I2_S type: bitnet.cpp's fork numbers it 36)
    q1_0        GGUF Q1_0, blocks of 128: {fp16 d; uint8 qs[16]}, sign bits LSB first (gguf-py
                names the type but has no quantizer for it)

TQ1_0/TQ2_0 are packed by gguf-py's own quantizers (llama.cpp's reference, byte for byte): given
codes times one fp16 scale d, every block comes out as exactly those codes with block scale d,
except a block whose codes are all zero, whose scale is 0 (a neutral block: its dot products are
0 whatever the scale; readers take the tensor's scale from the non-zero blocks).
tests/test_packing.py checks each layout against a plain-loop statement of its specification.
"""

from __future__ import annotations

import gguf
import numpy as np

__all__ = [
    "absmean_quantize",
    "binarize",
    "hf_unpack",
    "pack_i2_s",
    "pack_q1_0",
    "pack_tq1_0",
    "pack_tq2_0",
    "permute_rope_rows",
    "unpack_i2_s",
    "unpack_q1_0",
]

QK_K = 256
QK_I2_S = 128
QK1_0 = 128


def absmean_quantize(w: np.ndarray) -> tuple[np.ndarray, float]:
    """Ternary codes (int8, same shape) and beta = mean|w| of a float tensor (round half to even)."""
    w32 = np.asarray(w, dtype=np.float32)
    mean = np.float32(np.abs(w32, dtype=np.float64).mean() if w32.size else 0.0)
    s = np.float32(1.0) / max(mean, np.float32(1e-5))
    codes = np.clip(np.rint(w32 * s), -1, 1).astype(np.int8)
    return codes, float(np.float32(1.0) / s)


def binarize(w: np.ndarray) -> tuple[np.ndarray, float]:
    """Sign codes (int8 in {-1, +1}) of w - mean(w), and beta = mean|w| (BitNet, 2023)."""
    w32 = np.asarray(w, dtype=np.float32)
    alpha = np.float32(w32.mean(dtype=np.float64))
    codes = np.where(w32 - alpha > 0, 1, -1).astype(np.int8)
    return codes, float(np.float32(np.abs(w32, dtype=np.float64).mean()))


def hf_unpack(packed: np.ndarray, n_rows: int) -> np.ndarray:
    """Codes (n_rows, in) from transformers' packing: row i*R + r sits in bits 2i of packed row r."""
    p = np.asarray(packed, dtype=np.uint8)
    planes = [((p >> (2 * i)) & 3).astype(np.int8) - 1 for i in range(4)]
    out = np.concatenate(planes, axis=0)
    return out[:n_rows]


def permute_rope_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorders q/k rows from Hugging Face's rotate_half pairing to llama.cpp's interleaved one.

    Within each head of size d, new row 2i + j is old row j * d/2 + i (j in {0, 1}), the
    permutation llama.cpp's converter applies for the llama architecture.
    """
    rows = w.shape[0]
    head = rows // n_heads
    return np.asarray(
        w.reshape(n_heads, 2, head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
    )


def _fp16_bytes(d: np.ndarray) -> np.ndarray:
    return np.asarray(d, dtype=np.float16).reshape(-1, 1).view(np.uint8)


def _gguf_quantize(codes: np.ndarray, d: float, qtype: gguf.GGMLQuantizationType) -> np.ndarray:
    """gguf-py's quantizer applied to codes * d: blocks of exactly these codes with scale d."""
    c = np.asarray(codes, dtype=np.int8)
    assert c.ndim == 2 and c.shape[1] % QK_K == 0, f"{qtype.name} rows must be a multiple of 256"
    scale = np.float16(d)
    assert np.isfinite(scale) and scale > 0, f"{qtype.name} needs a positive fp16 scale, got {d}"
    # max|x| of a block is the fp16 value itself (so d round-trips exactly), and x / d rounds
    # back to the codes whatever the float error of the division.
    return np.asarray(gguf.quants.quantize(c.astype(np.float32) * np.float32(scale), qtype))


def pack_tq2_0(codes: np.ndarray, d: float) -> np.ndarray:
    """TQ2_0 bytes (rows, K/256*66) of ternary codes (rows, K) with block scale fp16(d)."""
    return _gguf_quantize(codes, d, gguf.GGMLQuantizationType.TQ2_0)


def pack_tq1_0(codes: np.ndarray, d: float) -> np.ndarray:
    """TQ1_0 bytes (rows, K/256*54) of ternary codes (rows, K) with block scale fp16(d)."""
    return _gguf_quantize(codes, d, gguf.GGMLQuantizationType.TQ1_0)


def pack_i2_s(codes: np.ndarray, beta: float) -> np.ndarray:
    """I2_S bytes (n/4 + 32) of ternary codes (any shape, n % 128 == 0) and one float32 scale."""
    c = np.asarray(codes, dtype=np.int8).reshape(-1)
    n = c.size
    assert n % QK_I2_S == 0, "I2_S needs a multiple of 128 elements"
    q = (c + 1).astype(np.uint8).reshape(-1, 4, 32)
    packed = (q[:, 0] << 6) | (q[:, 1] << 4) | (q[:, 2] << 2) | q[:, 3]
    tail = np.zeros(32, dtype=np.uint8)
    tail[:4] = np.array([beta], dtype=np.float32).view(np.uint8)
    return np.concatenate([packed.reshape(-1), tail])


def unpack_i2_s(data: np.ndarray, shape: tuple[int, ...]) -> tuple[np.ndarray, float]:
    """(codes of the given shape, scale) of I2_S bytes."""
    n = int(np.prod(shape))
    b = np.asarray(data, dtype=np.uint8)
    packed = b[: n // 4].reshape(-1, 1, 32)
    q = (packed >> np.array([6, 4, 2, 0], dtype=np.uint8).reshape(1, 4, 1)) & 3
    codes = q.astype(np.int8).reshape(shape) - 1
    scale = float(b[n // 4 : n // 4 + 4].copy().view(np.float32)[0])
    return codes, scale


def pack_q1_0(codes: np.ndarray, beta: float) -> np.ndarray:
    """Q1_0 bytes (rows, K/128*18) of sign codes (rows, K) in {-1, +1} with block scale beta."""
    c = np.asarray(codes, dtype=np.int8)
    rows, k = c.shape
    assert k % QK1_0 == 0, "Q1_0 rows must be a multiple of 128"
    nb = rows * (k // QK1_0)
    bits = np.packbits((c.reshape(nb, QK1_0) > 0).astype(np.uint8), axis=1, bitorder="little")
    d = np.full(nb, beta, dtype=np.float32)
    return np.concatenate([_fp16_bytes(d), bits], axis=1).reshape(rows, -1)


def unpack_q1_0(data: np.ndarray, rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(codes (rows, K) in {-1, +1}, block scales (rows, K/128)) of Q1_0 bytes."""
    b = np.asarray(data, dtype=np.uint8).reshape(rows * (k // QK1_0), 18)
    d = b[:, :2].copy().view(np.float16).astype(np.float32).reshape(rows, -1)
    bits = np.unpackbits(b[:, 2:], axis=1, bitorder="little").astype(np.int8)
    return (bits * 2 - 1).reshape(rows, k), d
