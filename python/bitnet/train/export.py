"""Export to the Hugging Face BitNet layout (microsoft/bitnet-b1.58-2B-4T-bf16 style).

Writes config.json (``BitNetForCausalLM``, relu2, tied embeddings, an online ``autobitlinear``
quantization_config), model.safetensors with the latent master weights under the Hugging Face
names, generation_config.json, and the SentencePiece tokenizer. transformers loads the result
and quantizes on the fly exactly as training did; ``bitnet.convert`` converts it.

A binary model gets ``"weight_quant": "binary"`` in its quantization_config: bitnet's converter
then writes sign bits (Q1_0) with beta = mean|W| (docs/format.md, "Converting"). transformers has
no binary BitLinear and would run such a checkpoint as ternary.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from .model import BitNetLM

__all__ = ["export_hf", "hf_config"]


def hf_config(model: BitNetLM, dtype: str = "float32") -> dict[str, Any]:
    c = model.cfg
    if not c.sub_norms or c.quant == "none":
        raise ValueError(
            "only BitNet models (quantized, with sub-norms) export as BitNetForCausalLM"
        )
    quant: dict[str, Any] = {
        "quant_method": "bitnet",
        "linear_class": "autobitlinear",
        "quantization_mode": "online",
    }
    if c.quant == "binary":
        quant["weight_quant"] = "binary"
    return {
        "architectures": ["BitNetForCausalLM"],
        "model_type": "bitnet",
        "hidden_act": "relu2",
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
        "max_position_embeddings": c.max_position_embeddings,
        "rms_norm_eps": c.rms_norm_eps,
        "rope_theta": c.rope_theta,
        "tie_word_embeddings": True,
        "vocab_size": c.vocab_size,
        "bos_token_id": c.bos_token_id,
        "eos_token_id": c.eos_token_id,
        "attention_bias": False,
        "initializer_range": 0.02,
        "torch_dtype": dtype,
        "quantization_config": quant,
    }


def export_hf(
    model: BitNetLM,
    out: Path,
    *,
    tokenizer_dir: Path | None = None,
    dtype: str = "float32",
) -> Path:
    """Writes model as a Hugging Face checkpoint directory; returns out.

    Args:
        model: A quantized BitNetLM with sub-norms.
        out: Directory to create.
        tokenizer_dir: Directory whose tokenizer.model and tokenizer_config.json are copied.
        dtype: "float32" (exact master weights) or "bfloat16" (as the 2B4T-bf16 repository).
    """
    from safetensors.torch import save_file

    cfg = hf_config(model, dtype)
    tdtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    out.mkdir(parents=True, exist_ok=True)
    state = {
        k: v.detach().to(tdtype).contiguous()
        for k, v in model.state_dict().items()
        if k.startswith("model.")
    }
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": cfg["bos_token_id"], "eos_token_id": cfg["eos_token_id"]})
    )
    if tokenizer_dir is not None:
        for name in ("tokenizer.model", "tokenizer_config.json"):
            if (tokenizer_dir / name).is_file():
                shutil.copyfile(tokenizer_dir / name, out / name)
    return out
