"""The bundled default model (models/README.md) and the binary fixture trained with it."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

import bitnet
from bitnet.api import default_model_path

MODELS = Path(__file__).resolve().parent.parent / "models"
BINARY = MODELS / "bitnet-kjv-binary-tiny-q1_0.gguf"
KJV = (
    "And God said, Let the waters bring forth abundantly the moving creature that hath life, "
    "and fowl that may fly above the earth in the open firmament of heaven."
)


def test_default_model_is_bundled_and_small():
    path = default_model_path()
    assert path.name == "bitnet-kjv-5m-tq2_0.gguf"
    assert path.stat().st_size <= 15 * 2**20


def test_generate_uses_the_default_model():
    t0 = time.perf_counter()
    text = bitnet.generate("In the beginning", max_tokens=30)
    elapsed = time.perf_counter() - t0
    assert isinstance(text, str)
    assert len(text.split()) >= 5, text
    assert elapsed < 30  # loose: shared CI machines; the model card reports the real timing


def test_default_model_is_ternary_and_has_learned_its_corpus():
    model = bitnet.load(default_model_path(), progress=False)
    infos = model._core.linear_info()
    assert infos and all(i["source_type"] == "TQ2_0" and not i["binary"] for i in infos)
    # A uniform guess over the 3072 pieces has perplexity 3072; the trained model is far below.
    assert model.perplexity(KJV) < 100
    greedy = model.generate("In the beginning", max_tokens=20, temperature=0)
    assert any(w in greedy.split() for w in ("the", "and", "of", "God", "LORD")), greedy


def test_binary_fixture_runs_the_sign_bit_path():
    model = bitnet.load(BINARY, progress=False)
    infos = model._core.linear_info()
    assert infos and all(i["binary"] and i["source_type"] == "Q1_0" for i in infos)
    codes, _ = model._core.linear_codes(infos[0]["name"])
    assert set(np.unique(codes).tolist()) == {-1, 1}
    # It was really trained binary: far better than uniform, and it writes words.
    assert model.perplexity(KJV) < 400
    assert len(model.generate("In the beginning", max_tokens=20, temperature=0).split()) >= 3
