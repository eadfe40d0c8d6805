"""Hugging Face tensor names to GGUF tensor names, by llama.cpp's own table (gguf-py).

``gguf.TensorNameMap`` is the table llama.cpp's converter uses, so our files name tensors exactly
as llama.cpp's do. It lacks three names BitNet checkpoints use, added here on top of it (with
the GGUF names still taken from gguf-py's ``TENSOR_NAMES``):

* microsoft's 2B4T calls its sub-norms ``self_attn.attn_sub_norm`` and ``mlp.ffn_sub_norm``
  (gguf-py maps only 1bitLLM's ``inner_attn_ln`` and ``ffn_layernorm``);
* llama.cpp's ``bitnet`` architecture has no ``output`` tensor (it always ties the output layer
  to the embeddings); an untied BitNet checkpoint's ``lm_head`` is written as ``output.weight``,
  which our engine reads.
"""

from __future__ import annotations

import gguf

__all__ = ["TensorNames"]

_ARCHS = {"bitnet": gguf.MODEL_ARCH.BITNET, "llama": gguf.MODEL_ARCH.LLAMA}

_EXTRA_BLOCK = {
    gguf.MODEL_TENSOR.ATTN_SUB_NORM: "model.layers.{bid}.self_attn.attn_sub_norm",
    gguf.MODEL_TENSOR.FFN_SUB_NORM: "model.layers.{bid}.mlp.ffn_sub_norm",
}
_EXTRA = {gguf.MODEL_TENSOR.OUTPUT: "lm_head"}


class TensorNames:
    """HF module names ("model.layers.3.self_attn.q_proj") to GGUF names ("blk.3.attn_q")."""

    def __init__(self, arch: str, n_layers: int) -> None:
        self._map = gguf.TensorNameMap(_ARCHS[arch], n_layers)
        self._extra: dict[str, str] = {hf: gguf.TENSOR_NAMES[t] for t, hf in _EXTRA.items()}
        for bid in range(n_layers):
            for t, hf in _EXTRA_BLOCK.items():
                self._extra[hf.format(bid=bid)] = gguf.TENSOR_NAMES[t].format(bid=bid)

    def gguf(self, hf: str, suffix: str = ".weight") -> str:
        """The GGUF name of HF module hf, with suffix ("blk.3.attn_q" + ".weight")."""
        name = self._map.get_name(hf) or self._extra.get(hf)
        if name is None:  # a layout names only tensors the tables know: a bug, not bad input
            raise KeyError(f"no GGUF name for the Hugging Face tensor {hf!r}")
        return name + suffix
