"""Conversion of Hugging Face BitNet checkpoints into bitnet's GGUF files.

Four checkpoint layouts are recognised by config and tensor presence, never by file name
(see ../shared/reference/formats.md and docs/format.md, "Converting"):

=====================  ========================  =========================  ==================
layout                 architectures[0]          BitLinear weights          written as arch
=====================  ========================  =========================  ==================
2B4T packed            BitNetForCausalLM         U8 + weight_scale (x)      bitnet
2B4T master weights    BitNetForCausalLM         BF16/F32, absmean          bitnet
1bitLLM                BitnetForCausalLM         F32, absmean               bitnet
Llama BitLinear        LlamaForCausalLM          U8 + weight_scale (1/x)    llama
=====================  ========================  =========================  ==================

Packed weights: ``quantization_config.linear_class == "autobitlinear"`` means weight_scale
multiplies (2B4T), anything else means it divides (transformers' BitLinear: HF1BitLLM, Falcon3).
A checkpoint whose quantization_config says ``"weight_quant": "binary"`` has binary (1-bit)
weights: sign(W - mean W) with beta = mean|W|, written as Q1_0.

Conversion streams tensor by tensor from memory-mapped shards, so peak memory stays near one
tensor (in float32) whatever the model size.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import gguf
import numpy as np

from ..errors import FormatError, ParameterError, UnsupportedError
from . import EMBEDDING_TYPES, WEIGHT_TYPES, ternary
from .atomic import atomic_output
from .config import Hyper, Layout, detect_layout, read_config, read_hyper
from .names import TensorNames
from .safetensors_io import Checkpoint, TensorRef
from .vocab import read_tokenizer

__all__ = ["EMBEDDING_TYPES", "WEIGHT_TYPES", "convert_checkpoint"]

# bitnet.cpp's I2_S: ggml type 36 in its fork (a number upstream ggml has retired), file type 40.
I2_S_TYPE = 36
I2_S_FILE_TYPE = 40

_FLOAT_TYPES = {
    "f16": gguf.GGMLQuantizationType.F16,
    "f32": gguf.GGMLQuantizationType.F32,
    "bf16": gguf.GGMLQuantizationType.BF16,
}

# Types whose per-block scale is an fp16 number.
_BLOCK_SCALED = (
    int(gguf.GGMLQuantizationType.TQ2_0),
    int(gguf.GGMLQuantizationType.TQ1_0),
    int(gguf.GGMLQuantizationType.Q1_0),
)


@dataclass
class PlannedTensor:
    name: str
    shape: tuple[int, ...]  # numpy order: (rows, row length)
    qtype: int
    nbytes: int
    produce: Callable[[], np.ndarray] = field(repr=False)


def _expect_shape(ref: TensorRef, shape: tuple[int, ...]) -> None:
    if ref.shape != shape:
        raise FormatError(
            f"{ref.path}: tensor '{ref.name}' has shape {list(ref.shape)}, expected {list(shape)}"
        )


def _finite(a: np.ndarray, ref: TensorRef) -> np.ndarray:
    if not np.isfinite(a).all():
        raise FormatError(f"{ref.path}: tensor '{ref.name}' contains NaN or Inf")
    return a


def _packed_beta(ckpt: Checkpoint, hf: str, layout: Layout) -> float:
    """beta of a packed weight from its weight_scale (a multiplier or its inverse, per layout)."""
    scale_ref = ckpt[hf + ".weight_scale"]
    if scale_ref.shape not in ((), (1,)):
        raise FormatError(
            f"{scale_ref.path}: tensor '{scale_ref.name}' has shape "
            f"{list(scale_ref.shape)}, expected [1]"
        )
    scale = float(scale_ref.float32().reshape(-1)[0])
    if not math.isfinite(scale) or scale <= 0:
        raise FormatError(
            f"{scale_ref.path}: tensor '{scale_ref.name}' is {scale}, expected a positive scale"
        )
    return scale if layout.scale_multiplies else float(np.float32(1.0) / np.float32(scale))


def linear_codes(
    ckpt: Checkpoint, hf: str, n_out: int, n_in: int, layout: Layout
) -> tuple[np.ndarray, float]:
    """Codes (n_out, n_in) int8 and the multiplier beta of one BitLinear weight."""
    ref = ckpt[hf + ".weight"]
    if ref.dtype == "U8":
        _expect_shape(ref, ((n_out + 3) // 4, n_in))
        if layout.binary:
            raise FormatError(
                f"{ref.path}: tensor '{ref.name}' is packed ternary but the config "
                "says the weights are binary"
            )
        codes = ternary.hf_unpack(np.asarray(ref.raw()), n_out)
        if (codes > 1).any():
            raise FormatError(
                f"{ref.path}: tensor '{ref.name}' holds the 2-bit code 3, which "
                "is not a ternary value"
            )
        return codes, _packed_beta(ckpt, hf, layout)
    if not ref.is_float:
        raise FormatError(
            f"{ref.path}: tensor '{ref.name}' has dtype {ref.dtype}, expected "
            "U8 (packed) or a float type"
        )
    _expect_shape(ref, (n_out, n_in))
    w = _finite(ref.float32(), ref)
    return ternary.binarize(w) if layout.binary else ternary.absmean_quantize(w)


def _fits_fp16(value: float) -> bool:
    with np.errstate(over="ignore", under="ignore"):
        half = np.float16(value)
    return bool(np.isfinite(half) and half != 0)


def _encode_linear(
    codes: np.ndarray, beta: float, weight_type: str, binary: bool, where: str
) -> tuple[int, np.ndarray]:
    """(ggml type id, bytes or float array) of a BitLinear weight, with the documented fallbacks.

    Block types and F16 store beta as an fp16 number; a beta fp16 cannot hold (beyond 65504, or
    below 2^-24) is an UnsupportedError naming the tensor (`where`) rather than wrong weights.
    """
    n_in = codes.shape[1]
    qtype, _ = _linear_type(codes.shape[0], n_in, weight_type, binary)
    fp16_scale = qtype in _BLOCK_SCALED or qtype == int(gguf.GGMLQuantizationType.F16)
    if fp16_scale and not _fits_fp16(beta):
        raise UnsupportedError(
            f"{where}: weight scale {beta:g} does not fit the fp16 scale of "
            f"{gguf.GGMLQuantizationType(qtype).name}; convert with weight_type 'i2_s' or "
            "'f32' (CLI: --weight-type)"
        )
    if qtype == int(gguf.GGMLQuantizationType.Q1_0):
        return qtype, ternary.pack_q1_0(codes, beta)
    if qtype == int(gguf.GGMLQuantizationType.TQ2_0):
        return qtype, ternary.pack_tq2_0(codes, beta)
    if qtype == int(gguf.GGMLQuantizationType.TQ1_0):
        return qtype, ternary.pack_tq1_0(codes, beta)
    if qtype == I2_S_TYPE:
        return qtype, ternary.pack_i2_s(codes, beta)
    dtype = np.float32 if qtype == int(gguf.GGMLQuantizationType.F32) else np.float16
    return qtype, codes.astype(dtype) * dtype(beta)


def _linear_type(n_out: int, n_in: int, weight_type: str, binary: bool) -> tuple[int, int]:
    """(ggml type, nbytes) that _encode_linear will produce, without computing it."""
    n = n_out * n_in
    if binary:
        if n_in % ternary.QK1_0 == 0:
            return int(gguf.GGMLQuantizationType.Q1_0), n // 128 * 18
        weight_type = "f16"
    if weight_type in ("tq2_0", "tq1_0") and n_in % ternary.QK_K == 0:
        per_block = 66 if weight_type == "tq2_0" else 54
        qt = (
            gguf.GGMLQuantizationType.TQ2_0
            if weight_type == "tq2_0"
            else gguf.GGMLQuantizationType.TQ1_0
        )
        return int(qt), n // 256 * per_block
    if weight_type in ("tq2_0", "tq1_0", "i2_s") and n % ternary.QK_I2_S == 0:
        return I2_S_TYPE, n // 4 + 32
    if weight_type == "f32":
        return int(gguf.GGMLQuantizationType.F32), n * 4
    return int(gguf.GGMLQuantizationType.F16), n * 2


def _float_tensor(ref: TensorRef, out_type: str) -> np.ndarray:
    """A float tensor converted to F32/F16/BF16 storage, in row chunks to bound memory."""
    rows = ref.shape[0] if ref.shape else 1
    per_row = max(1, int(np.prod(ref.shape[1:], dtype=np.int64)) if len(ref.shape) > 1 else 1)
    chunk = max(1, (64 << 20) // (4 * per_row))  # about 64 MiB of float32 at a time
    parts: list[np.ndarray] = []
    for start in range(0, rows, chunk):
        block = _finite(ref.float32(slice(start, start + chunk)), ref)
        if out_type == "f32":
            parts.append(block.astype(np.float32))
        elif out_type == "f16":
            with np.errstate(over="ignore"):
                half = block.astype(np.float16)
            if not np.isfinite(half).all():
                raise UnsupportedError(
                    f"{ref.path}: tensor '{ref.name}' has values beyond the F16 range "
                    f"(max |x| = {float(np.abs(block).max()):g}); convert with "
                    "embedding_type='bf16' or 'f32'"
                )
            parts.append(half)
        else:  # bf16, round half to even on the top 16 bits
            bits = block.view(np.uint32).astype(np.uint64)
            rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
            parts.append(rounded)
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _check_linear(ckpt: Checkpoint, hf: str, n_out: int, n_in: int, layout: Layout) -> None:
    """Checks a BitLinear weight's dtype and shape (and its scale's) before anything is written."""
    ref = ckpt[hf + ".weight"]
    if ref.dtype == "U8":
        _expect_shape(ref, ((n_out + 3) // 4, n_in))
        if layout.binary:
            raise FormatError(
                f"{ref.path}: tensor '{ref.name}' is packed ternary but the config "
                "says the weights are binary"
            )
        _packed_beta(ckpt, hf, layout)
    elif ref.is_float:
        _expect_shape(ref, (n_out, n_in))
    else:
        raise FormatError(
            f"{ref.path}: tensor '{ref.name}' has dtype {ref.dtype}, expected "
            "U8 (packed) or a float type"
        )


def plan_tensors(
    ckpt: Checkpoint, layout: Layout, hp: Hyper, weight_type: str, embedding_type: str
) -> list[PlannedTensor]:
    """The tensors of the output file, in llama.cpp's order, each with a deferred producer.

    Every source tensor's dtype and shape is checked here, before the output file is begun.
    """
    plan: list[PlannedTensor] = []
    used: set[str] = set()
    names = TensorNames(layout.arch, hp.n_layers)

    def dense(hf: str, shape: tuple[int, ...], out_type: str) -> None:
        ref = ckpt[hf + ".weight"]
        _expect_shape(ref, shape)
        if not ref.is_float:
            raise FormatError(
                f"{ref.path}: tensor '{ref.name}' has dtype {ref.dtype}, expected a float type"
            )
        used.add(ref.name)
        qtype = _FLOAT_TYPES[out_type]
        nbytes = math.prod(shape) * (4 if out_type == "f32" else 2)
        plan.append(
            PlannedTensor(
                names.gguf(hf),
                shape,
                int(qtype),
                nbytes,
                lambda: _float_tensor(ref, out_type).reshape(shape),
            )
        )

    def linear(hf: str, n_out: int, n_in: int, permute_heads: int | None) -> None:
        gguf_name = names.gguf(hf)
        _check_linear(ckpt, hf, n_out, n_in, layout)
        used.add(hf + ".weight")
        packed_beta: float | None = None
        if hf + ".weight_scale" in ckpt:
            used.add(hf + ".weight_scale")
            if ckpt[hf + ".weight"].dtype == "U8":
                packed_beta = _packed_beta(ckpt, hf, layout)
        qtype, nbytes = _linear_type(n_out, n_in, weight_type, layout.binary)
        # TQ and Q1_0 blocks store their scale as fp16. Where beta is not exactly an fp16
        # number, the bitnet architecture gets it exactly from llama.cpp's optional
        # "<name>.scale" F32 tensor, and the blocks carry d = 1 (the llama architecture has no
        # such tensor: d = fp16(beta) there).
        exact_scale = (
            layout.arch == "bitnet"
            and qtype in _BLOCK_SCALED
            and (packed_beta is None or float(np.float16(packed_beta)) != packed_beta)
        )
        beta_cell: list[float] = []

        def produce() -> np.ndarray:
            codes, beta = linear_codes(ckpt, hf, n_out, n_in, layout)
            if permute_heads is not None:
                codes = ternary.permute_rope_rows(codes, permute_heads)
            beta_cell.append(beta)
            where = f"{ckpt[hf + '.weight'].path}: tensor '{hf}.weight'"
            qt, data = _encode_linear(
                codes, 1.0 if exact_scale else beta, weight_type, layout.binary, where
            )
            assert qt == qtype and data.nbytes == nbytes
            return data

        plan.append(PlannedTensor(gguf_name, (n_out, n_in), qtype, nbytes, produce))
        if exact_scale:
            plan.append(
                PlannedTensor(
                    names.gguf(hf, ".scale"),
                    (1,),
                    int(gguf.GGMLQuantizationType.F32),
                    4,
                    lambda: np.array(beta_cell[-1:], dtype=np.float32),
                )
            )

    dense("model.embed_tokens", (hp.n_vocab, hp.n_embd), embedding_type)
    dense("model.norm", (hp.n_embd,), "f32")
    if hp.tied:
        used.add("lm_head.weight")
    else:
        dense("lm_head", (hp.n_vocab, hp.n_embd), embedding_type)

    q_dim = hp.n_heads * hp.head_dim
    kv_dim = hp.n_kv_heads * hp.head_dim
    llama = layout.arch == "llama"
    for i in range(hp.n_layers):
        p = f"model.layers.{i}."
        dense(p + "input_layernorm", (hp.n_embd,), "f32")
        linear(p + "self_attn.q_proj", q_dim, hp.n_embd, hp.n_heads if llama else None)
        linear(p + "self_attn.k_proj", kv_dim, hp.n_embd, hp.n_kv_heads if llama else None)
        linear(p + "self_attn.v_proj", kv_dim, hp.n_embd, None)
        linear(p + "self_attn.o_proj", hp.n_embd, q_dim, None)
        if layout.attn_sub_norm:
            dense(f"{p}self_attn.{layout.attn_sub_norm}", (q_dim,), "f32")
        dense(p + "post_attention_layernorm", (hp.n_embd,), "f32")
        linear(p + "mlp.gate_proj", hp.n_ff, hp.n_embd, None)
        linear(p + "mlp.up_proj", hp.n_ff, hp.n_embd, None)
        linear(p + "mlp.down_proj", hp.n_embd, hp.n_ff, None)
        if layout.ffn_sub_norm:
            dense(f"{p}mlp.{layout.ffn_sub_norm}", (hp.n_ff,), "f32")

    # Every tensor of the checkpoint must be accounted for: an unknown one (a bias, an extra
    # layer) means this is not the architecture we think it is.
    leftover = [n for n in ckpt.names() if n not in used and not n.endswith("rotary_emb.inv_freq")]
    if leftover:
        shown = ", ".join(sorted(leftover)[:5])
        more = f" and {len(leftover) - 5} more" if len(leftover) > 5 else ""
        raise UnsupportedError(
            f"{ckpt.directory}: unexpected tensors {shown}{more} "
            f"(not part of the {layout.name} layout)"
        )
    return plan


def _file_type(plan: list[PlannedTensor]) -> int:
    counts: dict[int, int] = {}
    for t in plan:
        if len(t.shape) == 2 and not t.name.startswith(("token_embd", "output.")):
            counts[t.qtype] = counts.get(t.qtype, 0) + 1
    main = max(counts, key=lambda k: counts[k]) if counts else int(gguf.GGMLQuantizationType.F32)
    return {
        int(gguf.GGMLQuantizationType.TQ2_0): int(gguf.LlamaFileType.MOSTLY_TQ2_0),
        int(gguf.GGMLQuantizationType.TQ1_0): int(gguf.LlamaFileType.MOSTLY_TQ1_0),
        int(gguf.GGMLQuantizationType.Q1_0): int(gguf.LlamaFileType.MOSTLY_Q1_0),
        int(gguf.GGMLQuantizationType.F16): int(gguf.LlamaFileType.MOSTLY_F16),
        int(gguf.GGMLQuantizationType.F32): int(gguf.LlamaFileType.ALL_F32),
        I2_S_TYPE: I2_S_FILE_TYPE,
    }.get(main, int(gguf.LlamaFileType.GUESSED))


def _add_metadata(
    w: gguf.GGUFWriter,
    layout: Layout,
    hp: Hyper,
    cfg: dict[str, Any],
    fallback_name: str,
    plan: list[PlannedTensor],
) -> None:
    name = cfg.get("_name_or_path")
    w.add_name(name if isinstance(name, str) and name else fallback_name)
    w.add_file_type(_file_type(plan))
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    w.add_vocab_size(hp.n_vocab)
    w.add_context_length(hp.n_ctx)
    w.add_embedding_length(hp.n_embd)
    w.add_block_count(hp.n_layers)
    w.add_feed_forward_length(hp.n_ff)
    w.add_head_count(hp.n_heads)
    w.add_head_count_kv(hp.n_kv_heads)
    if hp.head_dim * hp.n_heads != hp.n_embd:
        w.add_key_length(hp.head_dim)
        w.add_value_length(hp.head_dim)
    w.add_rope_dimension_count(hp.head_dim)
    w.add_rope_freq_base(hp.rope_theta)
    w.add_layer_norm_rms_eps(hp.rms_eps)
    if hp.rope_scaling_factor is not None:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(hp.rope_scaling_factor)
    # llama.cpp reads "<arch>.hidden_activation" for bitnet (its default is SiLU).
    w.add_string(f"{layout.arch}.hidden_activation", layout.activation)


def convert_checkpoint(
    src: Path,
    dst: Path,
    *,
    weight_type: str,
    embedding_type: str,
    tokenizer: Path | None,
    overwrite: bool,
    progress: bool,
    label: str,
    model_name: str | None = None,
) -> Path:
    """Converts checkpoint directory src into the GGUF file dst (written atomically).

    Everything is read and checked (config, tensor table, tokenizer) before the output is
    begun; the output appears at dst whole or not at all (see :mod:`bitnet.convert.atomic`).
    label names the model on the progress bar; model_name is general.name when config.json has
    no _name_or_path (default: the directory's name).
    """
    if weight_type not in WEIGHT_TYPES:
        raise ParameterError(
            "weight_type",
            f"weight_type must be one of {', '.join(WEIGHT_TYPES)}, got {weight_type!r}",
        )
    if embedding_type not in EMBEDDING_TYPES:
        raise ParameterError(
            "embedding_type",
            f"embedding_type must be one of {', '.join(EMBEDDING_TYPES)}, got {embedding_type!r}",
        )
    cfg = read_config(src)
    ckpt = Checkpoint(src)
    layout = detect_layout(cfg, ckpt, src)
    hp = read_hyper(cfg, ckpt, src)
    plan = plan_tensors(ckpt, layout, hp, weight_type, embedding_type)
    vocab = read_tokenizer(src, hp.n_vocab, tokenizer)

    with atomic_output(dst, overwrite=overwrite) as tmp:
        writer = gguf.GGUFWriter(tmp, layout.arch)
        try:
            _add_metadata(writer, layout, hp, cfg, model_name or src.name, plan)
            vocab.add_to(writer)
            for t in plan:
                # Types numpy does not describe (quantized, or I2_S which gguf-py does not know)
                # are declared with their logical shape; the data written is raw bytes.
                writer.add_tensor_info(
                    t.name,
                    t.shape,
                    np.dtype(np.float32),
                    t.nbytes,
                    raw_dtype=cast(gguf.GGMLQuantizationType, t.qtype),
                )
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for t in _progress(plan, progress, label):
                data = np.ascontiguousarray(t.produce())
                writer.write_tensor_data(data.reshape(-1).view(np.uint8))
        finally:
            writer.close()
    return dst


def _progress(plan: list[PlannedTensor], enabled: bool, label: str) -> Iterator[PlannedTensor]:
    if not enabled:
        yield from plan
        return
    from tqdm import tqdm

    total = sum(t.nbytes for t in plan)
    with tqdm(total=total, unit="B", unit_scale=True, desc=f"converting {label}") as bar:
        for t in plan:
            yield t
            bar.update(t.nbytes)
