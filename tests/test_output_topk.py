"""The exact-top-k output layer (model/output_topk.h): a 4-bit pre-pass with per-row error bounds
and exact recomputation must return the q8_0 path's k largest logits, bit for bit, over many
activations including outliers, exact ties and near-ties, forced tokens and disallowed tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bitnet
from bitnet import _core
from bitnet.default_model import default_model_path

ISAS = list(bitnet.cpu_info()["available_isas"])


def _model(path: Path | str, isa: str = "") -> _core.Model:
    return _core.Model(str(path), "q8_0", isa, "", True)


def _check(full: np.ndarray, got: np.ndarray, k: int, eligible: np.ndarray | None = None) -> None:
    """The guarantee for one token: finite values equal the full path's bit for bit, the rest are
    -inf, and every eligible token at or above the k-th largest eligible value is finite."""
    finite = np.isfinite(got)
    assert np.all(got[~finite] == -np.inf)
    np.testing.assert_array_equal(got[finite].view(np.uint32), full[finite].view(np.uint32))
    mask = np.ones(full.shape, bool) if eligible is None else eligible
    values = full[mask]
    if values.size == 0:
        return
    kth = np.sort(values)[-min(k, values.size)]
    must = mask & (full >= kth)
    assert np.all(finite[must]), f"missing top-{k} tokens {np.nonzero(must & ~finite)[0]}"


def _activations(n_embd: int, rng: np.random.Generator) -> np.ndarray:
    """Varied final hidden states: Gaussian, heavy-tailed, a few huge outlier channels, tiny
    scale, sparse, all zeros."""
    out = [
        rng.standard_normal((6, n_embd)),
        rng.standard_t(2, (4, n_embd)),
        rng.standard_normal((4, n_embd)) * 1e-6,
        np.where(rng.random((4, n_embd)) < 0.05, rng.standard_normal((4, n_embd)) * 10, 0.0),
        np.zeros((1, n_embd)),
    ]
    outliers = rng.standard_normal((4, n_embd))
    outliers[:, rng.integers(0, n_embd, 3)] *= 300
    out.append(outliers)
    return np.vstack(out).astype(np.float32)


@pytest.mark.parametrize("isa", ISAS)
def test_topk_equals_q8_path_on_the_bundled_model(isa: str) -> None:
    path = default_model_path()
    assert path is not None
    model = _model(path, isa)
    rng = np.random.default_rng(1)
    x = _activations(model.config["n_embd"], rng)
    full, n_full = _core.output_logits(model, x)
    assert np.all(n_full == model.config["n_vocab"])
    for k in (1, 2, 5, 40, 500):
        got, n_exact = _core.output_logits(model, x, k=k, n_threads=3)
        assert np.all(n_exact >= k)
        for t in range(x.shape[0]):
            _check(full[t], got[t], k)


def test_topk_on_a_real_hidden_state_distribution() -> None:
    # Hidden states recovered from a real forward pass (least squares on the f32 logits), so the
    # logit distribution has the margins a trained model gives: far fewer rows are recomputed.
    path = default_model_path()
    assert path is not None
    ref = bitnet.load(path, output_type="f32")
    ids = ref.tokenize("In the beginning God created the heaven and the earth.")
    logits = ref.logits(ids)
    info = {t["name"]: t for t in ref._core.file.tensors()}
    name = "output.weight" if "output.weight" in info else "token_embd.weight"
    n_embd = ref.config["n_embd"]
    w = ref._core.file.tensor_bytes(name).view(np.float16).reshape(-1, n_embd).astype(np.float64)
    x = np.linalg.lstsq(w, logits.T.astype(np.float64), rcond=None)[0].T.astype(np.float32)
    model = _model(path)
    full, _ = _core.output_logits(model, x)
    got, n_exact = _core.output_logits(model, x, k=1)
    for t in range(x.shape[0]):
        _check(full[t], got[t], 1)
    # Greedy decoding needs a small fraction of the rows exactly (0.2% median measured).
    assert float(np.median(n_exact)) < 0.05 * model.config["n_vocab"]


def test_exact_ties_and_near_ties() -> None:
    path = default_model_path()
    assert path is not None
    model = _model(path)
    n_embd = model.config["n_embd"]
    rng = np.random.default_rng(7)
    x = rng.standard_normal((8, n_embd)).astype(np.float32)
    full, _ = _core.output_logits(model, x)
    # Near-ties: move each activation so that its two largest logits almost meet.
    info = {t["name"]: t for t in model.file.tensors()}
    name = "output.weight" if "output.weight" in info else "token_embd.weight"
    w = model.file.tensor_bytes(name).view(np.float16).reshape(-1, n_embd).astype(np.float64)
    tied = []
    for t in range(x.shape[0]):
        a, b = np.argsort(-full[t])[:2]
        diff = w[a] - w[b]
        step = (full[t, a] - full[t, b]) / float(diff @ diff)
        for frac in (1.0, 0.999, 1.001):
            tied.append(x[t] - frac * step * diff)
    xs = np.vstack([x, np.asarray(tied, dtype=np.float32)])
    full, _ = _core.output_logits(model, xs)
    for k in (1, 2, 3):
        got, _ = _core.output_logits(model, xs, k=k)
        for t in range(xs.shape[0]):
            _check(full[t], got[t], k)
    # Exact ties: the same hidden state twice gives identical rows, and duplicated logits in a
    # row all count (every token equal to the k-th value is returned).
    got, _ = _core.output_logits(model, np.vstack([xs[:1], xs[:1]]), k=1)
    np.testing.assert_array_equal(got[0], got[1])


def test_forced_and_disallowed_tokens() -> None:
    path = default_model_path()
    assert path is not None
    model = _model(path)
    n_vocab, n_embd = model.config["n_vocab"], model.config["n_embd"]
    rng = np.random.default_rng(3)
    x = rng.standard_normal((6, n_embd)).astype(np.float32)
    full, _ = _core.output_logits(model, x)
    top = np.argsort(-full, axis=1)
    # Forbid each token's 3 best: the top-k of the rest must come back.
    allowed = np.ones(n_vocab, np.uint8)
    allowed[np.unique(top[:, :3])] = 0
    forced = np.array([top[0, 0], top[1, -1], 17], dtype=np.int32)
    got, _ = _core.output_logits(model, x, k=4, forced=forced, allowed=allowed)
    for t in range(x.shape[0]):
        eligible = allowed.astype(bool).copy()
        eligible[forced] = False
        _check(full[t], got[t], 4, eligible)
        assert np.all(np.isfinite(got[t, forced])), "forced tokens are always exact"


def test_bad_requests_raise() -> None:
    path = default_model_path()
    assert path is not None
    plain = _core.Model(str(path), "q8_0")
    x = np.zeros((1, plain.config["n_embd"]), np.float32)
    with pytest.raises(bitnet.UnsupportedError, match="topk_prepass"):
        _core.output_logits(plain, x, k=1)
    with pytest.raises(bitnet.UnsupportedError, match="q8_0"):
        _core.Model(str(path), "f32", "", "", True)
    model = _model(path)
    with pytest.raises(bitnet.ShapeError, match="x must be"):
        _core.output_logits(model, np.zeros((1, 3), np.float32), k=1)
    with pytest.raises(bitnet.ShapeError, match="forced"):
        _core.output_logits(model, x, k=1, forced=np.array([-1], np.int32))


def test_prepass_reads_at_most_five_bits_per_weight() -> None:
    path = default_model_path()
    assert path is not None
    model = _model(path)
    info = _core.output_topk_info(model)
    n_weights = model.config["n_vocab"] * model.config["n_embd"]
    assert info["available"]
    assert info["pass_bytes"] * 8 <= 5 * n_weights
    assert info["pass_bytes"] < 0.55 * info["q8_bytes"]


def _greedy(model: _core.Model, prompt: list[int], n_new: int, topk: int | None) -> list[int]:
    cache = _core.KvCache(model, n_blocks=8, block_tokens=32)
    dec = _core.BatchDecoder(model, cache, n_batch=64, n_threads=2)
    table = np.arange(8, dtype=np.int32)
    tokens = list(prompt)
    seq: tuple = (table, 0, np.asarray(prompt, np.int32), 1)
    for _ in range(n_new):
        row = dec.step([seq if topk is None else (*seq, topk)])[0]
        nxt = int(np.argmax(row))
        seq = (table, len(tokens), np.asarray([nxt], np.int32), 1)
        tokens.append(nxt)
    return tokens


def test_greedy_generation_is_identical_through_the_decoder() -> None:
    path = default_model_path()
    assert path is not None
    model = _model(path)
    ids = bitnet.load(path).tokenize("And God said, Let there be light")
    want = _greedy(model, ids, 150, None)
    assert _greedy(model, ids, 150, 1) == want
    assert _greedy(model, ids, 150, (3, np.asarray(want[:5], np.int32), None)) == want


def test_decoder_topk_rows_in_a_mixed_step() -> None:
    # Two sequences in one step, one full and one top-k: each gets what it asked for, and the
    # top-k row's finite values are the full row's bit for bit.
    path = default_model_path()
    assert path is not None
    model = _model(path)
    ids = np.asarray(bitnet.load(path).tokenize("In the beginning"), np.int32)
    cache = _core.KvCache(model, n_blocks=4, block_tokens=32)
    dec = _core.BatchDecoder(model, cache, n_batch=64, n_threads=3)
    a, b = np.asarray([0, 1], np.int32), np.asarray([2, 3], np.int32)
    rows = dec.step([(a, 0, ids, 1), (b, 0, ids, 1, 5)])
    _check(rows[0], rows[1], 5)
    assert np.isfinite(rows[0]).all() and np.isinf(rows[1]).sum() > 0
    with pytest.raises(bitnet.ShapeError, match="topk"):
        dec.step([(a, 0, ids, 1, -1)])
    plain = _core.Model(str(path), "q8_0")
    dec2 = _core.BatchDecoder(plain, _core.KvCache(plain, n_blocks=2, block_tokens=32), n_batch=64)
    with pytest.raises(bitnet.UnsupportedError, match="topk_prepass"):
        dec2.step([(np.asarray([0], np.int32), 0, ids, 1, 1)])
