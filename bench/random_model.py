#!/usr/bin/env python3
"""Writes a random-weight GGUF in the exact shapes of a real BitNet checkpoint, for benchmarks.

    python bench/random_model.py --shape 2b4t|large OUT.gguf [--weight-type tq2_0|tq1_0|i2_s]
        [--embedding-type f16|f32|bf16|q8_0] [--seed N]

The file is a standard ``bitnet``-architecture GGUF as docs/format.md specifies: llama.cpp's
tensor names and keys, ternary BitLinear weights (TQ2_0 by default, so llama.cpp's llama-bench
runs the very same file), F32 norms, a tied embedding, and a SentencePiece-style tokenizer
payload of dummy tokens of the right vocabulary size (llama.cpp refuses a GGUF without the
tokenizer.ggml.* arrays). The weights are random, so only speed is meaningful: ternary codes are
drawn uniformly from {-1, 0, +1} (a third zeros, as in trained BitNet models), with one scale per
tensor, beta = sqrt(1.5 / K), which keeps activations of the order of the input through a layer.

Fast and lean: ternary tensors are generated directly in their packed form (one random byte per
four or five weights, mapped through a table), tensor by tensor; the 2B4T shape takes well under
a minute and peak memory stays near the largest tensor (the embedding, 656 MB in F16).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import gguf
import numpy as np

# bitnet.cpp's I2_S: ggml type 36 in its fork, llama file type 40 (docs/format.md, section 7).
I2_S_TYPE = 36
I2_S_FILE_TYPE = 40


@dataclass(frozen=True)
class Shape:
    """Hyperparameters of a real checkpoint (config.json of the Hugging Face model)."""

    name: str
    n_embd: int
    n_ff: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    n_vocab: int
    activation: str
    rope_theta: float
    rms_eps: float
    n_ctx: int


SHAPES = {
    # microsoft/bitnet-b1.58-2B-4T
    "2b4t": Shape("2b4t", 2560, 6912, 30, 20, 5, 128256, "relu2", 500000.0, 1e-5, 4096),
    # 1bitLLM/bitnet_b1_58-large (vocab 32002: the checkpoint's embedding rows)
    "large": Shape("large", 1536, 4096, 24, 16, 16, 32002, "silu", 10000.0, 1e-5, 2048),
    # A few-MB model of the same structure, for tests of the benchmark tools.
    "tiny": Shape("tiny", 256, 512, 2, 4, 2, 512, "relu2", 10000.0, 1e-5, 256),
}

WEIGHT_TYPES = ("tq2_0", "tq1_0", "i2_s")
# What bitnet's loader reads for token_embd (csrc/format/dequant.cpp): F32, F16, BF16, Q8_0.
EMBEDDING_TYPES = ("f16", "f32", "bf16", "q8_0")

# Every byte of 4 ternary codes c0..c3 in {0, 1, 2} (c = w + 1) at 2 bits each, LSB first: the
# byte layout of TQ2_0's qs and of I2_S alike (which weight sits in which bit pair does not
# matter for independent random codes).
_C2 = np.array(
    [
        a | (b << 2) | (c << 4) | (d << 6)
        for a in range(3)
        for b in range(3)
        for c in range(3)
        for d in range(3)
    ],
    dtype=np.uint8,
)


def _codes2(rng: np.random.Generator, n_bytes: int) -> np.ndarray:
    """n_bytes random bytes, each holding 4 uniform ternary codes (never the code 3)."""
    return _C2[rng.integers(0, 81, size=n_bytes, dtype=np.uint8)]


def _tq1_bytes(rng: np.random.Generator, n: int, digits: int) -> np.ndarray:
    """n TQ1_0 bytes of `digits` uniform base-3 digits: ceil(v * 256 / 243), v < 3**digits."""
    v = rng.integers(0, 3**digits, size=n, dtype=np.uint16)
    if digits == 4:
        v = v * 3  # four-digit bytes hold t0..t3 with t4 = 0
    return ((v.astype(np.uint32) * 256 + 242) // 243).astype(np.uint8)


def ternary_tensor(
    rng: np.random.Generator, n_out: int, n_in: int, weight_type: str
) -> tuple[int, np.ndarray]:
    """(ggml type, packed bytes) of a random ternary (n_out, n_in) matrix with a per-tensor scale."""
    beta = float(np.float16(np.sqrt(1.5 / n_in)))  # exact in fp16: no ".scale" tensor needed
    d = np.frombuffer(np.float16(beta).tobytes(), dtype=np.uint8)
    if weight_type == "i2_s":
        n = n_out * n_in
        tail = np.zeros(32, dtype=np.uint8)
        tail[:4] = np.frombuffer(np.float32(beta).tobytes(), dtype=np.uint8)
        return I2_S_TYPE, np.concatenate([_codes2(rng, n // 4), tail])
    if n_in % 256:
        raise ValueError(f"{weight_type} needs rows that are a multiple of 256, got {n_in}")
    nb = n_out * n_in // 256
    if weight_type == "tq2_0":
        qs = _codes2(rng, nb * 64).reshape(nb, 64)
        blocks = np.concatenate([qs, np.broadcast_to(d, (nb, 2))], axis=1)
        return int(gguf.GGMLQuantizationType.TQ2_0), blocks.reshape(n_out, -1)
    qs = np.concatenate(
        [_tq1_bytes(rng, nb * 48, 5).reshape(nb, 48), _tq1_bytes(rng, nb * 4, 4).reshape(nb, 4)],
        axis=1,
    )
    blocks = np.concatenate([qs, np.broadcast_to(d, (nb, 2))], axis=1)
    return int(gguf.GGMLQuantizationType.TQ1_0), blocks.reshape(n_out, -1)


def embedding_tensor(
    rng: np.random.Generator, n_vocab: int, n_embd: int, embedding_type: str
) -> tuple[int, np.ndarray]:
    """(ggml type, data) of a random N(0, 1) embedding, generated in chunks of rows."""
    chunk = max(1, (32 << 20) // (4 * n_embd))  # about 32 MiB of float32 at a time
    if embedding_type == "q8_0":
        qt = gguf.GGMLQuantizationType.Q8_0
        row_bytes = n_embd // 32 * 34
        out = np.empty((n_vocab, row_bytes), dtype=np.uint8)
    elif embedding_type == "f32":
        qt = gguf.GGMLQuantizationType.F32
        out = np.empty((n_vocab, n_embd), dtype=np.float32)
    elif embedding_type == "f16":
        qt = gguf.GGMLQuantizationType.F16
        out = np.empty((n_vocab, n_embd), dtype=np.float16)
    else:  # bf16: top 16 bits of float32, round half to even
        qt = gguf.GGMLQuantizationType.BF16
        out = np.empty((n_vocab, n_embd), dtype=np.uint16)
    for start in range(0, n_vocab, chunk):
        stop = min(n_vocab, start + chunk)
        x = rng.standard_normal((stop - start, n_embd), dtype=np.float32)
        if embedding_type == "q8_0":
            out[start:stop] = gguf.quants.quantize(x, qt)
        elif embedding_type == "bf16":
            bits = x.view(np.uint32)
            out[start:stop] = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
        else:
            out[start:stop] = x
    return int(qt), out


def add_metadata(w: gguf.GGUFWriter, s: Shape, weight_type: str) -> None:
    """Architecture keys (docs/format.md, section 4) and a dummy SentencePiece vocabulary."""
    file_type = {
        "tq2_0": int(gguf.LlamaFileType.MOSTLY_TQ2_0),
        "tq1_0": int(gguf.LlamaFileType.MOSTLY_TQ1_0),
        "i2_s": I2_S_FILE_TYPE,
    }[weight_type]
    w.add_name(f"random-{s.name}")
    w.add_file_type(file_type)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_vocab_size(s.n_vocab)
    w.add_context_length(s.n_ctx)
    w.add_embedding_length(s.n_embd)
    w.add_block_count(s.n_layers)
    w.add_feed_forward_length(s.n_ff)
    w.add_head_count(s.n_heads)
    w.add_head_count_kv(s.n_kv_heads)
    w.add_rope_dimension_count(s.n_embd // s.n_heads)
    w.add_rope_freq_base(s.rope_theta)
    w.add_layer_norm_rms_eps(s.rms_eps)
    w.add_string("bitnet.hidden_activation", s.activation)
    # Tokenizer: <unk>, <s>, </s>, the 256 byte tokens, then dummy pieces up to n_vocab.
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    tokens += [f"\u2581t{i}" for i in range(len(tokens), s.n_vocab)]
    types += [1] * (s.n_vocab - len(types))
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(np.linspace(0.0, -1.0, s.n_vocab, dtype=np.float32).tolist())
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)


@dataclass
class _Planned:
    name: str
    shape: tuple[int, ...]  # numpy order (rows, cols)
    qtype: int
    nbytes: int
    kind: str  # "embd", "norm", "linear"


def _linear_nbytes(n_out: int, n_in: int, weight_type: str) -> tuple[int, int]:
    n = n_out * n_in
    if weight_type == "i2_s":
        return I2_S_TYPE, n // 4 + 32
    if weight_type == "tq2_0":
        return int(gguf.GGMLQuantizationType.TQ2_0), n // 256 * 66
    return int(gguf.GGMLQuantizationType.TQ1_0), n // 256 * 54


def plan(s: Shape, weight_type: str, embedding_type: str) -> list[_Planned]:
    """The tensors of the file in llama.cpp's order."""
    e_qt = {
        "f16": (gguf.GGMLQuantizationType.F16, 2 * s.n_embd),
        "f32": (gguf.GGMLQuantizationType.F32, 4 * s.n_embd),
        "bf16": (gguf.GGMLQuantizationType.BF16, 2 * s.n_embd),
        "q8_0": (gguf.GGMLQuantizationType.Q8_0, s.n_embd // 32 * 34),
    }[embedding_type]
    f32 = int(gguf.GGMLQuantizationType.F32)
    out = [
        _Planned(
            "token_embd.weight", (s.n_vocab, s.n_embd), int(e_qt[0]), e_qt[1] * s.n_vocab, "embd"
        ),
        _Planned("output_norm.weight", (s.n_embd,), f32, 4 * s.n_embd, "norm"),
    ]
    head_dim = s.n_embd // s.n_heads
    kv = s.n_kv_heads * head_dim
    for i in range(s.n_layers):
        b = f"blk.{i}."

        def lin(name: str, n_out: int, n_in: int, b: str = b) -> None:
            qt, nb = _linear_nbytes(n_out, n_in, weight_type)
            out.append(_Planned(b + name, (n_out, n_in), qt, nb, "linear"))

        out.append(_Planned(b + "attn_norm.weight", (s.n_embd,), f32, 4 * s.n_embd, "norm"))
        lin("attn_q.weight", s.n_embd, s.n_embd)
        lin("attn_k.weight", kv, s.n_embd)
        lin("attn_v.weight", kv, s.n_embd)
        lin("attn_output.weight", s.n_embd, s.n_embd)
        out.append(_Planned(b + "attn_sub_norm.weight", (s.n_embd,), f32, 4 * s.n_embd, "norm"))
        out.append(_Planned(b + "ffn_norm.weight", (s.n_embd,), f32, 4 * s.n_embd, "norm"))
        lin("ffn_gate.weight", s.n_ff, s.n_embd)
        lin("ffn_up.weight", s.n_ff, s.n_embd)
        lin("ffn_down.weight", s.n_embd, s.n_ff)
        out.append(_Planned(b + "ffn_sub_norm.weight", (s.n_ff,), f32, 4 * s.n_ff, "norm"))
    return out


def write_random_model(
    out: Path,
    shape: str,
    *,
    weight_type: str = "tq2_0",
    embedding_type: str = "f16",
    seed: int = 0,
    progress: bool = False,
) -> Path:
    """Writes the random model file `out` (atomically, via OUT.part) and returns its path."""
    if shape not in SHAPES:
        raise ValueError(f"shape must be one of {', '.join(SHAPES)}, got {shape!r}")
    if weight_type not in WEIGHT_TYPES:
        raise ValueError(f"weight type must be one of {', '.join(WEIGHT_TYPES)}")
    if embedding_type not in EMBEDDING_TYPES:
        raise ValueError(f"embedding type must be one of {', '.join(EMBEDDING_TYPES)}")
    s = SHAPES[shape]
    rng = np.random.default_rng(seed)
    tensors = plan(s, weight_type, embedding_type)
    tmp = out.with_name(out.name + ".part")
    w = gguf.GGUFWriter(tmp, "bitnet")
    try:
        add_metadata(w, s, weight_type)
        for t in tensors:
            w.add_tensor_info(
                t.name,
                t.shape,
                np.dtype(np.float32),
                t.nbytes,
                raw_dtype=cast(gguf.GGMLQuantizationType, t.qtype),
            )
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        t0 = time.monotonic()
        for i, t in enumerate(tensors):
            if t.kind == "embd":
                qt, data = embedding_tensor(rng, s.n_vocab, s.n_embd, embedding_type)
            elif t.kind == "norm":
                qt, data = t.qtype, np.ones(t.shape, dtype=np.float32)
            else:
                qt, data = ternary_tensor(rng, t.shape[0], t.shape[1], weight_type)
            assert qt == t.qtype and data.nbytes == t.nbytes, t.name
            w.write_tensor_data(np.ascontiguousarray(data).reshape(-1).view(np.uint8))
            if progress and (i + 1) % 50 == 0:
                print(
                    f"  {i + 1}/{len(tensors)} tensors, {time.monotonic() - t0:.1f} s",
                    file=sys.stderr,
                )
        w.close()
        tmp.replace(out)
    except BaseException:
        w.close()
        tmp.unlink(missing_ok=True)
        raise
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Write a random-weight BitNet GGUF of a real model's shape (for benchmarks)."
    )
    p.add_argument("out", type=Path, help="output .gguf file")
    p.add_argument(
        "--shape",
        choices=sorted(SHAPES),
        default="2b4t",
        help="2b4t: BitNet b1.58 2B4T; large: 1bitLLM bitnet_b1_58-large; tiny: for tests",
    )
    p.add_argument(
        "--weight-type",
        choices=WEIGHT_TYPES,
        default="tq2_0",
        help="BitLinear storage (default tq2_0; i2_s files are bitnet/bitnet.cpp-only)",
    )
    p.add_argument(
        "--embedding-type",
        choices=EMBEDDING_TYPES,
        default="f16",
        help="storage of the (tied) embedding and output layer (default f16)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress")
    a = p.parse_args(argv)
    t0 = time.monotonic()
    path = write_random_model(
        a.out,
        a.shape,
        weight_type=a.weight_type,
        embedding_type=a.embedding_type,
        seed=a.seed,
        progress=not a.quiet,
    )
    size = path.stat().st_size
    print(
        f"{path}: random {a.shape} ({a.weight_type}, embeddings {a.embedding_type}), "
        f"{size} bytes, {time.monotonic() - t0:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
