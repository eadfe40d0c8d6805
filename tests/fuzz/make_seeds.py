"""Writes the seed corpus of the model fuzzer (tests/fuzz/corpus/): tiny, valid model files.

Each seed is a complete model the engine loads and runs, as small as its weight type allows, so
that the fuzzer spends its executions on structure rather than on bulk: one per BitLinear type
(F32 latent, TQ2_0, TQ1_0, I2_S, Q1_0), both architectures' RoPE styles, tied and separate
output layers, Q8_0/F16/BF16 embeddings, per-tensor scales, and the three tokenizer forms
(SentencePiece arrays, BPE arrays with merges, none). A minimal GGUF writer of its own (not
gguf-py) writes them, so that any type id can be used.

Also writes tests/fuzz/regressions/: one small model per failure class of issue 11 (counts that
must not size allocations, invalid UTF-8, a context no machine holds), run once by .ci/run and
loaded by tests/test_hostile_files.py. A crash the fuzzer finds is added there too.

Usage: python tests/fuzz/make_seeds.py [CORPUS_DIR]   (default: tests/fuzz/corpus)
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bitnet.convert.ternary import pack_i2_s, pack_q1_0, pack_tq1_0, pack_tq2_0

# GGUF value types and the tensor type ids used here (docs/format.md).
U32, I32, F32V, BOOL, STRING, ARRAY = 4, 5, 6, 7, 8, 9
F32, F16, Q8_0, BF16, TQ1_0, TQ2_0, I2_S, Q1_0 = 0, 1, 8, 30, 34, 35, 36, 41
ALIGN = 32
RNG = np.random.default_rng(11)


class Gguf:
    """Key/value pairs and tensors, written as GGUF v3."""

    def __init__(self) -> None:
        self.kvs: list[bytes] = []
        self.tensors: list[tuple[str, tuple[int, ...], int, bytes]] = []

    @staticmethod
    def _str(s: str | bytes) -> bytes:
        b = s.encode() if isinstance(s, str) else s
        return struct.pack("<Q", len(b)) + b

    def kv(self, key: str | bytes, vtype: int, value: Any, elem: int | None = None) -> None:
        """Adds a key, or replaces the value of a key already added."""
        out = self._str(key) + struct.pack("<I", vtype) + self._value(vtype, value, elem)
        prefix = self._str(key)
        self.kvs = [kv for kv in self.kvs if not kv.startswith(prefix)] + [out]

    def _value(self, vtype: int, value: Any, elem: int | None = None) -> bytes:
        if vtype == STRING:
            return self._str(value)
        if vtype == ARRAY:
            assert elem is not None
            body = b"".join(self._value(elem, v) for v in value)
            return struct.pack("<IQ", elem, len(value)) + body
        fmt = {U32: "<I", I32: "<i", F32V: "<f", BOOL: "<?"}[vtype]
        return struct.pack(fmt, value)

    def tensor(self, name: str, shape: tuple[int, ...], ttype: int, data: np.ndarray) -> None:
        """shape in ggml order (row length first)."""
        self.tensors.append((name, shape, ttype, np.ascontiguousarray(data).tobytes()))

    def write(self, path: Path) -> None:
        head = b"GGUF" + struct.pack("<IQQ", 3, len(self.tensors), len(self.kvs))
        head += b"".join(self.kvs)
        offset = 0
        infos = b""
        for name, shape, ttype, data in self.tensors:
            infos += self._str(name) + struct.pack("<I", len(shape))
            infos += b"".join(struct.pack("<Q", d) for d in shape)
            infos += struct.pack("<IQ", ttype, offset)
            offset += (len(data) + ALIGN - 1) // ALIGN * ALIGN
        out = head + infos
        out += b"\0" * (-len(out) % ALIGN)
        for _, _, _, data in self.tensors:
            out += data + b"\0" * (-len(data) % ALIGN)
        path.write_bytes(out)


def ternary(rows: int, k: int) -> np.ndarray:
    return RNG.integers(-1, 2, size=(rows, k)).astype(np.int8)


def linear(g: Gguf, name: str, n_in: int, n_out: int, ttype: int, scale: bool) -> None:
    """A BitLinear weight [n_in, n_out] of type ttype (+ a per-tensor .scale when asked)."""
    if ttype == F32:
        g.tensor(name + ".weight", (n_in, n_out), F32, RNG.normal(size=(n_out, n_in)).astype("f4"))
    elif ttype == F16:
        g.tensor(name + ".weight", (n_in, n_out), F16, ternary(n_out, n_in).astype(np.float16))
    elif ttype == TQ2_0:
        g.tensor(name + ".weight", (n_in, n_out), TQ2_0, pack_tq2_0(ternary(n_out, n_in), 0.5))
    elif ttype == TQ1_0:
        g.tensor(name + ".weight", (n_in, n_out), TQ1_0, pack_tq1_0(ternary(n_out, n_in), 0.5))
    elif ttype == I2_S:
        g.tensor(name + ".weight", (n_in, n_out), I2_S, pack_i2_s(ternary(n_out, n_in), 0.5))
    elif ttype == Q1_0:
        signs = np.where(RNG.random((n_out, n_in)) < 0.5, -1, 1).astype(np.int8)
        g.tensor(name + ".weight", (n_in, n_out), Q1_0, pack_q1_0(signs, 0.5))
    if scale:
        g.tensor(name + ".scale", (1,), F32, np.array([0.75], dtype="f4"))


def spm_tokenizer(g: Gguf, n_vocab: int) -> None:
    # No byte pieces: SentencePiece's byte fallback needs all 256, more than a tiny vocabulary.
    tokens = ["<unk>", "<s>", "</s>"]
    tokens += [f"\u2581{chr(97 + i % 26)}{'x' * (i // 26)}" for i in range(n_vocab - len(tokens))]
    types = [2, 3, 3] + [1] * (n_vocab - 3)
    g.kv("tokenizer.ggml.model", STRING, "llama")
    g.kv("tokenizer.ggml.tokens", ARRAY, tokens, STRING)
    g.kv("tokenizer.ggml.scores", ARRAY, [-float(i) for i in range(n_vocab)], F32V)
    g.kv("tokenizer.ggml.token_type", ARRAY, types, I32)
    g.kv("tokenizer.ggml.bos_token_id", U32, 1)
    g.kv("tokenizer.ggml.eos_token_id", U32, 2)
    g.kv("tokenizer.ggml.add_bos_token", BOOL, True)


def bpe_tokenizer(g: Gguf, n_vocab: int) -> None:
    letters = [chr(97 + i) for i in range(n_vocab - 6)]
    tokens = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "ab", "abc", "Ġa", *letters]
    types = [3, 3, 3] + [1] * (n_vocab - 3)
    g.kv("tokenizer.ggml.model", STRING, "gpt2")
    g.kv("tokenizer.ggml.pre", STRING, "llama-bpe")
    g.kv("tokenizer.ggml.tokens", ARRAY, tokens[:n_vocab], STRING)
    g.kv("tokenizer.ggml.token_type", ARRAY, types, I32)
    g.kv("tokenizer.ggml.merges", ARRAY, ["a b", "ab c"], STRING)
    g.kv("tokenizer.ggml.bos_token_id", U32, 0)
    g.kv("tokenizer.ggml.eos_token_id", U32, 1)
    g.kv("tokenizer.chat_template", STRING, "{% for m in messages %}{{ m.content }}{% endfor %}")


def model(
    path: Path | None,
    *,
    arch: str = "bitnet",
    n_embd: int,
    n_ff: int,
    n_heads: int,
    n_kv_heads: int,
    n_layers: int = 1,
    n_vocab: int = 24,
    linear_type: int,
    embd_type: int = F32,
    output_type: int | None = None,
    sub_norms: bool = True,
    scales: bool = False,
    tokenizer: str | None = "spm",
) -> Gguf:
    """A tiny model, written to path (when given) and returned."""
    g = Gguf()
    g.kv("general.architecture", STRING, arch)
    p = arch + "."
    g.kv(p + "context_length", U32, 64)
    g.kv(p + "embedding_length", U32, n_embd)
    g.kv(p + "block_count", U32, n_layers)
    g.kv(p + "feed_forward_length", U32, n_ff)
    g.kv(p + "attention.head_count", U32, n_heads)
    g.kv(p + "attention.head_count_kv", U32, n_kv_heads)
    g.kv(p + "attention.layer_norm_rms_epsilon", F32V, 1e-5)
    g.kv(p + "rope.freq_base", F32V, 10000.0)
    if arch == "bitnet":
        g.kv(p + "hidden_activation", STRING, "relu2")
    if tokenizer == "spm":
        spm_tokenizer(g, n_vocab)
    elif tokenizer == "bpe":
        bpe_tokenizer(g, n_vocab)

    def dense(name: str) -> None:
        values = RNG.normal(size=(n_vocab, n_embd)).astype("f4")
        if embd_type == F32:
            g.tensor(name, (n_embd, n_vocab), F32, values)
        elif embd_type == F16:
            g.tensor(name, (n_embd, n_vocab), F16, values.astype(np.float16))
        elif embd_type == BF16:
            g.tensor(name, (n_embd, n_vocab), BF16, (values.view(np.uint32) >> 16).astype("u2"))
        elif embd_type == Q8_0:
            blocks = values.reshape(-1, 32)
            d = np.abs(blocks).max(axis=1) / 127
            q = np.round(blocks / d[:, None]).astype(np.int8)
            raw = np.concatenate(
                [d.astype(np.float16).view(np.uint8).reshape(-1, 2), q.view(np.uint8)], axis=1
            )
            g.tensor(name, (n_embd, n_vocab), Q8_0, raw)

    def norm(name: str, n: int) -> None:
        g.tensor(name, (n,), F32, (1 + 0.1 * RNG.normal(size=n)).astype("f4"))

    dense("token_embd.weight")
    if output_type is not None:
        dense("output.weight")
    norm("output_norm.weight", n_embd)
    head_dim = n_embd // n_heads
    q_dim, kv_dim = n_heads * head_dim, n_kv_heads * head_dim
    for i in range(n_layers):
        b = f"blk.{i}."
        norm(b + "attn_norm.weight", n_embd)
        norm(b + "ffn_norm.weight", n_embd)
        if sub_norms:
            norm(b + "attn_sub_norm.weight", q_dim)
            norm(b + "ffn_sub_norm.weight", n_ff)
        linear(g, b + "attn_q", n_embd, q_dim, linear_type, scales)
        linear(g, b + "attn_k", n_embd, kv_dim, linear_type, scales)
        linear(g, b + "attn_v", n_embd, kv_dim, linear_type, scales)
        linear(g, b + "attn_output", q_dim, n_embd, linear_type, scales)
        linear(g, b + "ffn_gate", n_embd, n_ff, linear_type, scales)
        linear(g, b + "ffn_up", n_embd, n_ff, linear_type, scales)
        linear(g, b + "ffn_down", n_ff, n_embd, linear_type, scales)
    if path is not None:
        g.write(path)
    return g


def regressions(out: Path) -> None:
    """Inputs of the failure classes of issue 11, each a small valid model with one defect."""
    out.mkdir(parents=True, exist_ok=True)

    def small() -> Gguf:
        return model(None, arch="llama", n_embd=32, n_ff=32, n_heads=2, n_kv_heads=1,
                     linear_type=F16, embd_type=F16, sub_norms=False, tokenizer="bpe")  # fmt: skip

    g = small()  # per-layer structures must not be sized from the count alone
    g.kv("llama.block_count", U32, 4_000_000)
    g.write(out / "block-count-4m.gguf")
    g = small()  # a context no machine could hold, from the file
    g.kv("llama.context_length", U32, 1 << 31)
    g.write(out / "context-length-2e31.gguf")
    g = small()
    g.kv(b"general.n\xffme", STRING, "x")
    g.write(out / "invalid-utf8-key.gguf")
    g = small()
    g.kv("general.name", STRING, b"caf\xc3\x28")
    g.write(out / "invalid-utf8-value.gguf")
    g = small()  # an array count far beyond the bytes that follow
    g.kv("tokenizer.ggml.merges", ARRAY, ["a b"], STRING)
    g.write(out / "huge-array-count.gguf")
    data = bytearray((out / "huge-array-count.gguf").read_bytes())
    at = data.index(b"tokenizer.ggml.merges") + len(b"tokenizer.ggml.merges") + 8
    data[at : at + 8] = struct.pack("<Q", 1 << 60)
    (out / "huge-array-count.gguf").write_bytes(bytes(data))


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("corpus")
    out.mkdir(parents=True, exist_ok=True)
    model(out / "f32-latent-spm.gguf", n_embd=32, n_ff=64, n_heads=4, n_kv_heads=2, n_layers=2,
          linear_type=F32)  # fmt: skip
    model(out / "f16-llama-bpe.gguf", arch="llama", n_embd=32, n_ff=32, n_heads=2, n_kv_heads=1,
          linear_type=F16, embd_type=F16, output_type=F16, sub_norms=False, tokenizer="bpe")  # fmt: skip
    model(out / "tq2_0-q8-output.gguf", n_embd=256, n_ff=256, n_heads=2, n_kv_heads=1,
          linear_type=TQ2_0, embd_type=Q8_0, output_type=Q8_0, n_vocab=16)  # fmt: skip
    model(out / "tq1_0-llama-scales.gguf", arch="llama", n_embd=256, n_ff=256, n_heads=4,
          n_kv_heads=4, linear_type=TQ1_0, embd_type=F16, scales=True, sub_norms=False,
          n_vocab=16, tokenizer=None)  # fmt: skip
    model(out / "i2_s-bf16.gguf", n_embd=128, n_ff=128, n_heads=2, n_kv_heads=2,
          linear_type=I2_S, embd_type=BF16, n_vocab=16)  # fmt: skip
    model(out / "q1_0-binary.gguf", n_embd=128, n_ff=256, n_heads=4, n_kv_heads=2,
          linear_type=Q1_0, embd_type=F16, scales=True, n_vocab=16, tokenizer="bpe")  # fmt: skip
    # The bundled model's header (its real tokenizer arrays) with the first tensor's bytes only.
    from bitnet import _core

    bundled = Path(__file__).parents[2] / "models" / "bitnet-kjv-5m-tq2_0.gguf"
    cut = int(_core.GgufFile(str(bundled)).data_offset) + 64
    (out / "kjv-header-truncated.gguf").write_bytes(bundled.read_bytes()[:cut])
    regressions(out.parent / "regressions")


if __name__ == "__main__":
    main()
