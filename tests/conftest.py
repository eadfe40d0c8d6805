"""Shared fixtures: tiny Hugging Face checkpoints in every layout, converted on demand."""

from __future__ import annotations

import os

os.environ.setdefault("TORCHDYNAMO_DISABLE", "1")  # transformers' BitNet ops are torch.compile'd

from collections.abc import Callable
from pathlib import Path

import pytest

LAYOUTS = ("2b4t-bf16", "2b4t-packed", "1bitllm", "llama-bitlinear")


@pytest.fixture(scope="session")
def hf_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """name -> hf_fixtures.Fixture for every checkpoint layout (needs torch + transformers)."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import hf_fixtures as hfx

    root = tmp_path_factory.mktemp("hf")
    bf16, packed = hfx.build_2b4t_pair(root)
    models = [bf16, packed, hfx.build_1bitllm(root), hfx.build_llama_bitlinear(root)]
    return {m.name: m for m in models}


@pytest.fixture(scope="session")
def converted(
    hf_models: dict[str, object], tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., Path]:
    """converted(name, weight_type="tq2_0", embedding_type="f32") -> path of a GGUF file."""
    import bitnet

    out = tmp_path_factory.mktemp("gguf")
    cache: dict[tuple[str, str, str], Path] = {}

    def get(name: str, weight_type: str = "tq2_0", embedding_type: str = "f32") -> Path:
        key = (name, weight_type, embedding_type)
        if key not in cache:
            dst = out / f"{name}-{weight_type}-{embedding_type}.gguf"
            bitnet.convert(
                hf_models[name].path,
                dst,
                weight_type=weight_type,  # type: ignore[attr-defined]
                embedding_type=embedding_type,
                progress=False,
            )
            cache[key] = dst
        return cache[key]

    return get
