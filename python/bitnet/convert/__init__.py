"""Converting Hugging Face checkpoints into bitnet's GGUF files.

Example:
    >>> import bitnet
    >>> bitnet.convert("path/to/bitnet-b1.58-2B-4T", "2b4t.gguf")  # doctest: +SKIP
    PosixPath('2b4t.gguf')
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FormatError
from .hf import EMBEDDING_TYPES, WEIGHT_TYPES, convert_checkpoint

__all__ = ["EMBEDDING_TYPES", "WEIGHT_TYPES", "convert"]


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    weight_type: str = "tq2_0",
    embedding_type: str = "f16",
    tokenizer: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Converts a Hugging Face BitNet checkpoint directory into one GGUF file.

    Supported layouts (decided from config.json and the tensors present): microsoft's 2B4T in
    packed and bf16 master-weight form, 1bitLLM's BitnetForCausalLM, and LlamaForCausalLM
    BitLinear checkpoints (HF1BitLLM, Falcon3-1.58bit). Tensors are streamed one at a time.

    Args:
        src: Directory with config.json, model.safetensors (or shards and an index) and the
            tokenizer files.
        dst: Output file. Written atomically (to ``dst.part``, then renamed).
        weight_type: Storage of the ternary weights: "tq2_0" (default, llama.cpp's 2.06-bit
            type), "tq1_0" (1.69 bits), "i2_s" (bitnet.cpp's type), or "f16"/"f32" (ternary
            values in floats). Rows whose length is not a multiple of 256 cannot be TQ2_0/TQ1_0
            and fall back to I2_S. Binary checkpoints are always written as Q1_0.
        embedding_type: Storage of token embeddings and output layer: "f16", "f32" or "bf16".
        tokenizer: Directory holding the tokenizer, when src has none (HF1BitLLM's checkpoints
            use Meta-Llama-3's tokenizer).
        overwrite: Replace dst if it exists.
        progress: Show a progress bar.

    Returns:
        The path of the written file.

    Raises:
        FormatError: The checkpoint is malformed (missing tensors, wrong shapes, bad config).
        UnsupportedError: The checkpoint is well-formed but not a layout bitnet can run.
        FileExistsError: dst exists and overwrite is False.
    """
    src_path = Path(src)
    dst_path = Path(dst)
    if not src_path.is_dir():
        raise FormatError(f"{src_path}: not a directory (expected a Hugging Face checkpoint)")
    if dst_path.exists() and not overwrite:
        raise FileExistsError(f"{dst_path} exists (pass overwrite=True to replace it)")
    return convert_checkpoint(
        src_path,
        dst_path,
        weight_type=weight_type,
        embedding_type=embedding_type,
        tokenizer=Path(tokenizer) if tokenizer is not None else None,
        progress=progress,
    )
