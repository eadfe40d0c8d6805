"""Model.perplexity against the same sums written out from full-sequence logits."""

from __future__ import annotations

import math

import numpy as np
import pytest

import bitnet

TEXT = (
    "In the beginning God created the heaven and the earth. And the earth was without form, "
    "and void; and darkness was upon the face of the deep. The quick brown fox jumps."
)


def nll(logits: np.ndarray, target: int) -> float:
    row = logits.astype(np.float64)
    return float(np.log(np.exp(row - row.max()).sum()) + row.max() - row[target])


def sliding_reference(model, ids: list[int], window: int, stride: int) -> float:
    """Each token scored once, by the first window containing it at a position > 0."""
    total, count, scored = 0.0, 0, 1
    begin = 0
    while True:
        end = min(begin + window, len(ids))
        logits = model.logits(ids[begin:end])
        for t in range(max(scored, begin + 1), end):
            total += nll(logits[t - begin - 1], ids[t])
            count += 1
        scored = max(scored, end)
        if end == len(ids):
            return math.exp(total / count)
        begin += stride


@pytest.fixture(scope="module")
def model(converted):
    return bitnet.load(converted("2b4t-bf16"))


def test_whole_text_in_one_window(model):
    ids = model.tokenize(TEXT)
    assert len(ids) < model.n_ctx
    logits = model.logits(ids)
    expected = math.exp(np.mean([nll(logits[i], ids[i + 1]) for i in range(len(ids) - 1)]))
    assert model.perplexity(TEXT) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize(("window", "stride"), [(16, 8), (16, 5), (12, 12), (7, 1)])
def test_sliding_window(model, window, stride):
    ids = model.tokenize(TEXT)
    expected = sliding_reference(model, ids, window, stride)
    assert model.perplexity(TEXT, window=window, stride=stride) == pytest.approx(expected, rel=1e-5)


def test_close_to_transformers(model, hf_models):
    """The engine's perplexity is the reference model's, within the logit tolerance."""
    import hf_fixtures as hfx

    ids = model.tokenize(TEXT)
    ref = hfx.reference_logits(hf_models["2b4t-bf16"].reference, ids)
    expected = math.exp(np.mean([nll(ref[i], ids[i + 1]) for i in range(len(ids) - 1)]))
    assert model.perplexity(TEXT) == pytest.approx(expected, rel=0.05)


def test_bad_arguments(model):
    with pytest.raises(bitnet.ShapeError, match="two tokens"):
        model.perplexity("")
    with pytest.raises(ValueError, match="stride"):
        model.perplexity(TEXT, window=8, stride=9)
