"""config.json of a Hugging Face checkpoint: read, checked field by field, turned into a layout.

Every field the converter uses is checked for type and range here, before any tensor is read,
against what it implies: counts must be positive and fit GGUF's uint32, floats must be finite
and fit the float32 GGUF stores, ``num_hidden_layers`` must equal the layers the checkpoint
holds. A wrong field is a :class:`~bitnet.errors.FormatError` naming the file, the key, what was
expected and what was found.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, UnsupportedError
from .safetensors_io import Checkpoint

__all__ = ["Hyper", "Layout", "detect_layout", "read_config", "read_hyper", "read_json_file"]

_U32_MAX = (1 << 32) - 1
_F32_MAX = float(np.finfo(np.float32).max)
_LAYER_RE = re.compile(r"^model\.layers\.(\d+)\.")


@dataclass(frozen=True)
class Layout:
    """What kind of checkpoint this is and how to write it."""

    name: str
    arch: str  # GGUF architecture written
    activation: str  # "relu2" | "silu"
    attn_sub_norm: str | None  # HF name of the sub-norm before o_proj, under self_attn.
    ffn_sub_norm: str | None  # HF name of the sub-norm before down_proj, under mlp.
    scale_multiplies: bool  # packed weights: weight_scale is beta (True) or 1/beta (False)
    binary: bool


@dataclass(frozen=True)
class Hyper:
    """The hyperparameters read from config.json."""

    n_embd: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    n_ff: int
    n_vocab: int
    n_ctx: int
    rms_eps: float
    rope_theta: float
    rope_scaling_factor: float | None
    tied: bool


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def read_json_file(path: Path, what: str = "file") -> Any:
    """The JSON value of path; FormatError (naming path) when it is not JSON."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise FormatError(f"{path}: is a directory, expected a JSON {what}") from None
    try:
        return json.loads(data)
    except (UnicodeDecodeError, ValueError) as e:
        raise FormatError(f"{path}: not valid JSON ({e})") from None
    except RecursionError:
        raise FormatError(f"{path}: nests too deeply to be a JSON {what}") from None


def read_config(src: Path) -> dict[str, Any]:
    path = src / "config.json"
    if not path.is_file():
        raise FormatError(f"{src}: not a Hugging Face checkpoint directory (no config.json)")
    cfg = read_json_file(path, "object")
    if not isinstance(cfg, dict):
        raise FormatError(f"{path}: expected a JSON object, found {type(cfg).__name__}")
    return cfg


class _Fields:
    """Typed, range-checked access to the keys of one JSON object (config.json or a part)."""

    def __init__(self, obj: dict[str, Any], path: Path, prefix: str = "") -> None:
        self.obj = obj
        self.path = path
        self.prefix = prefix

    def _bad(self, key: str, expected: str, found: object) -> FormatError:
        return FormatError(
            f"{self.path}: key '{self.prefix}{key}' must be {expected}, found {_short(found)}"
        )

    def has(self, key: str) -> bool:
        return self.obj.get(key) is not None

    def get_int(self, key: str, default: int | None = None, *, hi: int = _U32_MAX) -> int:
        value = self.obj.get(key)
        if value is None:
            if default is None:
                raise FormatError(f"{self.path}: missing key '{self.prefix}{key}'")
            return default
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= hi:
            raise self._bad(key, f"an integer in [1, {hi}]", value)
        return value

    def get_float(
        self, key: str, default: float, *, lo: float, hi: float = _F32_MAX, lo_open: bool = False
    ) -> float:
        value = self.obj.get(key)
        if value is None:
            return default
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        v = float(value) if ok else float("nan")
        if not (ok and np.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi):
            interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
            raise self._bad(key, f"a finite number in {interval}", value)
        return v

    def get_str(self, key: str, default: str | None = None) -> str | None:
        value = self.obj.get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self._bad(key, "a string", value)
        return value

    def get_bool(self, key: str, default: bool) -> bool:
        value = self.obj.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self._bad(key, "true or false", value)
        return value

    def get_object(self, key: str) -> _Fields:
        value = self.obj.get(key)
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise self._bad(key, "an object", value)
        return _Fields(value, self.path, f"{self.prefix}{key}.")


def detect_layout(cfg: dict[str, Any], ckpt: Checkpoint, src: Path) -> Layout:
    """Decides the checkpoint layout from config.json and the tensors present."""
    f = _Fields(cfg, src / "config.json")
    archs = cfg.get("architectures")
    if archs is not None and (
        not isinstance(archs, list) or not all(isinstance(a, str) for a in archs)
    ):
        raise f._bad("architectures", "a list of class names", archs)
    arch = archs[0] if archs else None
    qc = f.get_object("quantization_config")
    if qc.obj.get("use_rms_norm"):
        raise UnsupportedError(
            f"{src}: quantization_config.use_rms_norm (an RMSNorm inside every BitLinear) is not "
            "supported yet"
        )
    weight_quant = qc.get_str("weight_quant") or f.get_str("weight_quant")
    binary = weight_quant == "binary"
    multiplies = qc.get_str("linear_class", "bitlinear") == "autobitlinear"
    act = f.get_str("hidden_act", "silu")
    if act not in ("relu2", "silu"):
        raise UnsupportedError(f"{src}: hidden_act '{act}' is not supported (relu2, silu)")
    layer0 = "model.layers.0."
    if arch == "BitNetForCausalLM":
        sub = ("attn_sub_norm", "ffn_sub_norm")
        name, gguf_arch = "bitnet-2b4t", "bitnet"
    elif arch == "BitnetForCausalLM":
        sub = ("inner_attn_ln", "ffn_layernorm")
        name, gguf_arch = "1bitllm", "bitnet"
    elif arch == "LlamaForCausalLM":
        if qc.get_str("quant_method") != "bitnet":
            raise UnsupportedError(
                f"{src}: a LlamaForCausalLM without quantization_config.quant_method 'bitnet' is "
                "a full-precision model, not a BitNet checkpoint"
            )
        sub = ("attn_sub_norm", "ffn_sub_norm")
        name, gguf_arch = "llama-bitlinear", "llama"
    else:
        raise UnsupportedError(
            f"{src}: architecture {_short(arch)} is not supported (supported: "
            "BitNetForCausalLM, BitnetForCausalLM, LlamaForCausalLM with a bitnet "
            "quantization_config)"
        )
    attn_sub = sub[0] if f"{layer0}self_attn.{sub[0]}.weight" in ckpt else None
    ffn_sub = sub[1] if f"{layer0}mlp.{sub[1]}.weight" in ckpt else None
    if gguf_arch == "bitnet" and (attn_sub is None or ffn_sub is None):
        missing = f"self_attn.{sub[0]}" if attn_sub is None else f"mlp.{sub[1]}"
        raise FormatError(
            f"{src}: missing tensor '{layer0}{missing}.weight' ({arch} has sub-norms)"
        )
    if gguf_arch == "llama" and (attn_sub or ffn_sub):
        raise UnsupportedError(f"{src}: a LlamaForCausalLM with sub-norms is not a known layout")
    return Layout(name, gguf_arch, act, attn_sub, ffn_sub, multiplies, binary)


def _layers_present(ckpt: Checkpoint) -> int:
    """1 + the highest N of the checkpoint's model.layers.N tensors (0 without any)."""
    found = [int(m.group(1)) for n in ckpt.names() if (m := _LAYER_RE.match(n))]
    return max(found) + 1 if found else 0


def read_hyper(cfg: dict[str, Any], ckpt: Checkpoint, src: Path) -> Hyper:
    path = src / "config.json"
    f = _Fields(cfg, path)
    n_embd = f.get_int("hidden_size")
    n_heads = f.get_int("num_attention_heads")
    n_kv = f.get_int("num_key_value_heads", n_heads)
    head_dim = f.get_int("head_dim", max(1, n_embd // n_heads))
    if n_heads % n_kv:
        raise FormatError(
            f"{path}: num_attention_heads {n_heads} is not a multiple of num_key_value_heads {n_kv}"
        )
    if head_dim % 2:
        raise FormatError(f"{path}: head size {head_dim} must be even for RoPE")
    n_layers = f.get_int("num_hidden_layers")
    present = _layers_present(ckpt)
    if n_layers != present:
        raise FormatError(
            f"{path}: num_hidden_layers is {n_layers} but {ckpt.directory} holds tensors for "
            f"{present} layers (model.layers.0 to model.layers.{present - 1})"
        )
    # rope_theta lives at the top level (transformers < 5) or in rope_parameters (>= 5).
    rope = f.get_object("rope_parameters")
    theta = f.get_float(
        "rope_theta", rope.get_float("rope_theta", 10000.0, lo=1, lo_open=True), lo=1, lo_open=True
    )
    scaling = f.get_object("rope_scaling") if f.has("rope_scaling") else rope
    rope_type = scaling.get_str("rope_type") or scaling.get_str("type") or "default"
    factor: float | None = None
    if rope_type == "linear":
        factor = scaling.get_float("factor", 1.0, lo=0, lo_open=True)
    elif rope_type != "default":
        raise UnsupportedError(
            f"{path}: RoPE scaling '{rope_type}' is not supported (default, linear)"
        )
    embed = ckpt["model.embed_tokens.weight"]
    if len(embed.shape) != 2 or embed.shape[1] != n_embd:
        raise FormatError(
            f"{embed.path}: tensor '{embed.name}' has shape {list(embed.shape)}, "
            f"expected [vocab, {n_embd}] (hidden_size {n_embd})"
        )
    n_vocab = embed.shape[0]
    if n_vocab < 1 or n_vocab > _U32_MAX:
        raise FormatError(f"{embed.path}: tensor '{embed.name}' has {n_vocab} rows")
    if f.has("vocab_size") and f.get_int("vocab_size") != n_vocab:
        raise FormatError(
            f"{path}: vocab_size {cfg['vocab_size']} differs from the "
            f"{n_vocab} rows of model.embed_tokens.weight"
        )
    tie = f.get_bool("tie_word_embeddings", False)
    tied = "lm_head.weight" not in ckpt or tie
    return Hyper(
        n_embd=n_embd,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        head_dim=head_dim,
        n_ff=f.get_int("intermediate_size"),
        n_vocab=n_vocab,
        n_ctx=f.get_int("max_position_embeddings", 2048, hi=(1 << 31) - 1),
        rms_eps=f.get_float("rms_norm_eps", 1e-6, lo=0, hi=0.5),
        rope_theta=theta,
        rope_scaling_factor=factor,
        tied=tied,
    )
