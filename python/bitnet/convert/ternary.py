"""The numpy statement of BitNet's weight math and of every packed layout bitnet reads or writes.

Quantization (BitNet b1.58, per tensor, as in the reference implementations):
    s = 1 / max(mean|W|, 1e-5);   T = clip(round_half_even(W * s), -1, 1);   W ~ T / s
Binarization (original 1-bit BitNet):
    alpha = mean(W);   B = +1 where W - alpha > 0 else -1;   beta = mean|W|;   W ~ beta * B

Layouts (docs/format.md has byte diagrams):
    hf_unpack   Hugging Face 2-bit packing along the output axis (transformers pack_weights)
    tq2_0       GGUF TQ2_0, blocks of 256: {uint8 qs[64]; fp16 d}
    tq1_0       GGUF TQ1_0, blocks of 256: {uint8 qs[48]; uint8 qh[4]; fp16 d}
    i2_s        bitnet.cpp I2_S (x86): 4 codes per byte over the flattened tensor + float32 scale
    q1_0        GGUF Q1_0, blocks of 128: {fp16 d; uint8 qs[16]}, sign bits LSB first

All functions are pure and vectorized; tests compare them with gguf-py's own quantizers and with
transformers' pack_weights.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "absmean_quantize",
    "binarize",
    "hf_pack",
    "hf_unpack",
    "pack_i2_s",
    "pack_q1_0",
    "pack_tq1_0",
    "pack_tq2_0",
    "permute_rope_rows",
    "unpack_i2_s",
    "unpack_q1_0",
    "unpack_tq1_0",
    "unpack_tq2_0",
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


def hf_pack(codes: np.ndarray) -> np.ndarray:
    """Inverse of hf_unpack for n_rows divisible by 4 (what transformers writes)."""
    c = np.asarray(codes, dtype=np.int8)
    if c.shape[0] % 4:
        raise ValueError("hf_pack needs a row count divisible by 4")
    r = c.shape[0] // 4
    u = (c + 1).astype(np.uint8)
    return (u[:r] | (u[r : 2 * r] << 2) | (u[2 * r : 3 * r] << 4) | (u[3 * r :] << 6)).astype(
        np.uint8
    )


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


def pack_tq2_0(codes: np.ndarray, beta: float) -> np.ndarray:
    """TQ2_0 bytes (rows, K/256*66) of ternary codes (rows, K) with per-block scale beta."""
    c = np.asarray(codes, dtype=np.int8)
    rows, k = c.shape
    assert k % QK_K == 0, "TQ2_0 rows must be a multiple of 256"
    nb = rows * (k // QK_K)
    q = (c.reshape(nb, 2, 4, 32) + 1).astype(np.uint8)
    qs = q[:, :, 0] | (q[:, :, 1] << 2) | (q[:, :, 2] << 4) | (q[:, :, 3] << 6)  # (nb, 2, 32)
    d = np.full(nb, beta, dtype=np.float32)
    blocks = np.concatenate([qs.reshape(nb, 64), _fp16_bytes(d)], axis=1)
    return blocks.reshape(rows, -1)


def unpack_tq2_0(data: np.ndarray, rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(codes (rows, K), block scales (rows, K/256) float32) of TQ2_0 bytes."""
    b = np.asarray(data, dtype=np.uint8).reshape(rows * (k // QK_K), 66)
    qs = b[:, :64].reshape(-1, 2, 1, 32) >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(
        1, 1, 4, 1
    )
    codes = (qs & 3).astype(np.int8).reshape(rows, k) - 1
    d = b[:, 64:].copy().view(np.float16).astype(np.float32).reshape(rows, -1)
    return codes, d


_POW3_5 = np.array([81, 27, 9, 3, 1], dtype=np.uint16)
_POW3_4 = np.array([81, 27, 9, 3], dtype=np.uint16)


def pack_tq1_0(codes: np.ndarray, beta: float) -> np.ndarray:
    """TQ1_0 bytes (rows, K/256*54) of ternary codes (rows, K) with per-block scale beta."""
    c = np.asarray(codes, dtype=np.int8)
    rows, k = c.shape
    assert k % QK_K == 0, "TQ1_0 rows must be a multiple of 256"
    nb = rows * (k // QK_K)
    t = (c.reshape(nb, QK_K) + 1).astype(np.uint16)
    # Values n*32 + m (n < 5) go to byte m; 160 + n*16 + m to byte 32 + m; 240 + n*4 + m to qh[m].
    qs0 = (t[:, :160].reshape(nb, 5, 32) * _POW3_5.reshape(1, 5, 1)).sum(axis=1)
    qs1 = (t[:, 160:240].reshape(nb, 5, 16) * _POW3_5.reshape(1, 5, 1)).sum(axis=1)
    qh = (t[:, 240:].reshape(nb, 4, 4) * _POW3_4.reshape(1, 4, 1)).sum(axis=1)
    v = np.concatenate([qs0, qs1, qh], axis=1)
    q = ((v * 256 + 242) // 243).astype(np.uint8)  # ceil(v * 256 / 243)
    d = np.full(nb, beta, dtype=np.float32)
    return np.concatenate([q, _fp16_bytes(d)], axis=1).reshape(rows, -1)


def unpack_tq1_0(data: np.ndarray, rows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(codes (rows, K), block scales (rows, K/256)) of TQ1_0 bytes."""
    b = np.asarray(data, dtype=np.uint8).reshape(rows * (k // QK_K), 54)
    nb = b.shape[0]

    def digits(q: np.ndarray, n: int) -> np.ndarray:
        pow3 = np.array([1, 3, 9, 27, 81][:n], dtype=np.uint8).reshape(1, n, 1)
        x = (q[:, None, :] * pow3).astype(np.uint8)  # wraps modulo 256, as intended
        return ((x.astype(np.uint16) * 3) >> 8).astype(np.int8)

    t0 = digits(b[:, :32], 5).reshape(nb, 160)
    t1 = digits(b[:, 32:48], 5).reshape(nb, 80)
    t2 = digits(b[:, 48:52], 4).reshape(nb, 16)
    codes = np.concatenate([t0, t1, t2], axis=1).reshape(rows, k) - 1
    d = b[:, 52:54].copy().view(np.float16).astype(np.float32).reshape(rows, -1)
    return codes.astype(np.int8), d


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
