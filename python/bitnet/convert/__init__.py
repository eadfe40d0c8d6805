"""Converting Hugging Face checkpoints into bitnet's GGUF files.

Example:
    >>> import bitnet
    >>> bitnet.convert("path/to/bitnet-b1.58-2B-4T", "2b4t.gguf")  # doctest: +SKIP
    PosixPath('2b4t.gguf')
    >>> bitnet.convert("microsoft/bitnet-b1.58-2B-4T", "2b4t.gguf")  # doctest: +SKIP
    PosixPath('2b4t.gguf')
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import FormatError

__all__ = ["EMBEDDING_TYPES", "WEIGHT_TYPES", "convert"]

WEIGHT_TYPES = ("tq2_0", "tq1_0", "i2_s", "f16", "f32")
EMBEDDING_TYPES = ("f16", "f32", "bf16")


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    weight_type: str = "tq2_0",
    embedding_type: str = "f16",
    tokenizer: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    revision: str | None = None,
) -> Path:
    """Converts a Hugging Face BitNet checkpoint into one GGUF file.

    Supported layouts (decided from config.json and the tensors present): microsoft's 2B4T in
    packed and bf16 master-weight form, 1bitLLM's BitnetForCausalLM, and LlamaForCausalLM
    BitLinear checkpoints (HF1BitLLM, Falcon3-1.58bit). Tensors are streamed one at a time.

    Args:
        src: A checkpoint directory (config.json, model.safetensors or shards with their
            index, tokenizer files), or a Hugging Face repository ("owner/repo") or registry
            name, whose checkpoint files are taken from huggingface_hub's cache or downloaded.
        dst: Output file, in an existing directory. Written to a temporary file of its own
            beside it, then renamed: dst never holds a partial file, even when the conversion
            fails or is interrupted.
        weight_type: Storage of the ternary weights: "tq2_0" (default, llama.cpp's 2.06-bit
            type), "tq1_0" (1.69 bits), "i2_s" (bitnet.cpp's type), or "f16"/"f32" (ternary
            values in floats). Rows whose length is not a multiple of 256 cannot be TQ2_0/TQ1_0
            and fall back to I2_S. Binary checkpoints are always written as Q1_0.
        embedding_type: Storage of token embeddings and output layer: "f16", "f32" or "bf16".
        tokenizer: Directory holding the tokenizer, when src has none (HF1BitLLM's checkpoints
            use Meta-Llama-3's tokenizer).
        overwrite: Replace dst if it exists.
        progress: Show a progress bar (and download progress for a hub src).
        revision: Hub branch, tag or commit, when src is a hub name.

    Returns:
        The path of the written file.

    Raises:
        FormatError: The checkpoint is malformed (missing tensors, wrong shapes, bad config,
            unreadable tokenizer): the message names the file, key or tensor.
        UnsupportedError: The checkpoint is well-formed but not a layout bitnet can run.
        ParameterError: weight_type or embedding_type is not one of the choices.
        HubError: src is a hub name that is neither cached nor downloadable.
        FileExistsError: dst exists and overwrite is False.
        FileNotFoundError: dst's directory does not exist.
    """
    src_path = Path(src)
    dst_path = Path(dst)
    label = dst_path.name
    model_name: str | None = None
    tok_path = Path(tokenizer) if tokenizer is not None else None
    if not src_path.is_dir():
        from .. import hub

        name = os.fspath(src)
        if not src_path.exists() and hub.is_hub_name(name):
            src_path, hub_tokenizer = hub.checkpoint_dir(name, revision=revision, progress=progress)
            tok_path = tok_path or hub_tokenizer
            entry = hub.find_model(name)
            label = model_name = entry.repo if entry is not None else name
        elif src_path.exists():
            raise FormatError(f"{src_path}: not a directory (expected a Hugging Face checkpoint)")
        else:
            raise FileNotFoundError(
                f"{src_path}: no such directory (a Hugging Face checkpoint directory or an "
                "'owner/repo' name)"
            )
    elif revision is not None:
        from ..errors import ParameterError

        raise ParameterError(
            "revision", f"revision applies to hub names, but {os.fspath(src)!r} is a directory"
        )
    from .hf import convert_checkpoint  # gguf-py and numpy: imported when converting

    return convert_checkpoint(
        src_path,
        dst_path,
        weight_type=weight_type,
        embedding_type=embedding_type,
        tokenizer=tok_path,
        overwrite=overwrite,
        progress=progress,
        label=label,
        model_name=model_name,
    )
