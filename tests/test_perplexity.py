"""Model.perplexity against the same sums written out from full-sequence logits."""

from __future__ import annotations

import math

import numpy as np
import pytest

import bitnet
from bitnet.errors import ParameterError
from bitnet.eval import kl_divergence, perplexity, perplexity_llama_cpp
from bitnet.eval.logits_file import LogitsReader, LogitsWriter, dequantize_rows, quantize_rows

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


# -- llama.cpp's method ---------------------------------------------------------------------------


def llama_cpp_reference(model, ids: list[int], n_ctx: int, bos: int | None):
    """llama-perplexity's loop written out: chunk, BOS first, score the second half."""
    nlls, running = [], []
    for c in range(len(ids) // n_ctx):
        chunk = ids[c * n_ctx : (c + 1) * n_ctx]
        inputs = ([bos] if bos is not None else chunk[:1]) + chunk[1:]
        logits = model.logits(inputs)
        nlls += [nll(logits[j], chunk[j + 1]) for j in range(n_ctx // 2, n_ctx - 1)]
        running.append(math.exp(np.mean(nlls)))
    mean = float(np.mean(nlls))
    ppl = math.exp(mean)
    stderr = ppl * math.sqrt((np.mean(np.square(nlls)) - mean**2) / (len(nlls) - 1))
    return ppl, stderr, len(nlls), running


@pytest.mark.parametrize("n_ctx", [16, 11, 8])
def test_llama_cpp_method(model, n_ctx):
    ids = model.tokenize(TEXT, special=False)
    assert ids[0] == model.tokenizer.bos_id  # the whole text is tokenized once, with BOS
    r = perplexity(model, TEXT, method="llama.cpp", window=n_ctx)
    ppl, stderr, count, running = llama_cpp_reference(model, ids, n_ctx, model.tokenizer.bos_id)
    assert r.method == "llama.cpp" and r.window == r.stride == n_ctx
    assert r.n_scored == count == (len(ids) // n_ctx) * (n_ctx - 1 - n_ctx // 2)
    assert r.ppl == pytest.approx(ppl, rel=1e-5)
    assert r.stderr == pytest.approx(stderr, rel=1e-4)
    assert r.running_ppl == pytest.approx(running, rel=1e-5)
    assert model.perplexity(TEXT, method="llama.cpp", window=n_ctx) == r.ppl


def test_llama_cpp_method_without_bos(converted):
    """A model that adds no BOS keeps each chunk's own first token."""
    m = bitnet.load(converted("2b4t-bf16"))
    m.tokenizer.add_bos = False
    ids = m.tokenize(TEXT, special=False)
    assert ids[0] != m.tokenizer.bos_id
    ppl, _, _, _ = llama_cpp_reference(m, ids, 16, None)
    assert perplexity(m, TEXT, method="llama.cpp", window=16).ppl == pytest.approx(ppl, rel=1e-5)


def test_llama_cpp_method_chunks_and_limits(model):
    n = len(model.tokenize(TEXT, special=False))
    r = perplexity(model, TEXT, method="llama.cpp", window=8, n_chunks=2)
    assert len(r.running_ppl) == 2 and r.n_scored == 2 * 3
    with pytest.raises(bitnet.ShapeError, match=f"at least 2 \\* {n} = {2 * n} tokens"):
        perplexity(model, TEXT, method="llama.cpp", window=n)
    with pytest.raises(ParameterError, match="context"):
        perplexity(model, TEXT * 20, method="llama.cpp", window=model.n_ctx + 1)
    with pytest.raises(ParameterError, match="stride"):
        perplexity(model, TEXT, method="llama.cpp", window=8, stride=4)
    with pytest.raises(ParameterError, match="method"):
        perplexity(model, TEXT, method="wiki")


def test_result_totals(model):
    r = perplexity(model, TEXT, window=16, stride=5)
    assert r.ppl == pytest.approx(math.exp(r.nll_sum / r.n_scored), rel=1e-12)
    assert r.n_scored == r.n_tokens - 1 and len(r.running_ppl) >= 2
    assert r.running_ppl[-1] == pytest.approx(r.ppl, rel=1e-12)


# -- KL divergence --------------------------------------------------------------------------------


def test_kl_of_an_option_with_itself_is_zero(converted):
    path = converted("2b4t-bf16")
    a, b = bitnet.load(path), bitnet.load(path)
    r = kl_divergence(a, TEXT, base=b, n_ctx=16)
    assert r.kl_mean == 0.0 and r.kl_max == 0.0
    assert r.same_top == 1.0 and r.dp_rms == 0.0
    assert r.ppl == r.ppl_base and r.ln_ppl_ratio == 0.0
    ref = perplexity(a, TEXT, method="llama.cpp", window=16)
    assert r.n_tokens == ref.n_scored and r.ppl == pytest.approx(ref.ppl, rel=1e-6)


def test_kl_against_numpy(converted):
    """q8_0 output layer and f16 KV cache against the exact path, from Model.logits of both."""
    path = converted("2b4t-bf16")
    q = bitnet.load(path, output_type="q8_0", kv_cache="f16")
    exact = bitnet.load(path, output_type="f32", kv_cache="f32", isa="ref")
    r = kl_divergence(q, TEXT, base=exact, n_ctx=16)
    ids = q.tokenize(TEXT, special=False)
    kls, same, dps = [], [], []
    for c in range(len(ids) // 16):
        chunk = ids[c * 16 : (c + 1) * 16]
        inputs = [q.tokenizer.bos_id, *chunk[1:]]
        lq, lp = q.logits(inputs).astype(np.float64), exact.logits(inputs).astype(np.float64)
        for j in range(8, 15):
            logq = lq[j] - np.log(np.exp(lq[j] - lq[j].max()).sum()) - lq[j].max()
            logp = lp[j] - np.log(np.exp(lp[j] - lp[j].max()).sum()) - lp[j].max()
            kls.append(float((np.exp(logp) * (logp - logq)).sum()))
            same.append(lq[j].argmax() == lp[j].argmax())
            dps.append(math.exp(logq[chunk[j + 1]]) - math.exp(logp[chunk[j + 1]]))
    assert r.n_tokens == len(kls)
    assert r.kl_mean == pytest.approx(np.mean(kls), rel=1e-4, abs=1e-9)
    assert r.kl_max == pytest.approx(max(kls), rel=1e-4, abs=1e-9)
    assert r.same_top == pytest.approx(np.mean(same))
    assert r.dp_mean == pytest.approx(np.mean(dps), rel=1e-4, abs=1e-9)
    assert r.dp_rms == pytest.approx(math.sqrt(np.mean(np.square(dps))), rel=1e-4, abs=1e-9)
    assert 0 < r.kl_mean < 1e-2  # int8 output layer and f16 cache: close, not identical


def test_logits_file_round_trip(converted, tmp_path):
    """A base file written during the llama.cpp-method run, then read back: KL of the same
    option is the 16-bit storage error only, and the tokens come from the file."""
    m = bitnet.load(converted("2b4t-bf16"))
    base = tmp_path / "base.kld"
    r = perplexity_llama_cpp(m, TEXT, n_ctx=16, logits_file=base)
    ids = m.tokenize(TEXT, special=False)
    with LogitsReader(base) as f:
        assert (f.n_ctx, f.n_vocab, f.n_chunk) == (16, m.n_vocab, len(ids) // 16)
        assert f.tokens == ids[: f.n_chunk * 16]
    kl = kl_divergence(m, base=str(base))
    assert kl.n_tokens == r.n_scored
    assert kl.ppl == pytest.approx(r.ppl, rel=1e-6)
    assert kl.ppl_base == pytest.approx(r.ppl, rel=1e-3)
    # Each stored log-probability is within half a step (16 / 65535 / 2) of exact, which bounds
    # the KL of the stored distribution against the exact one to first order.
    assert abs(kl.kl_max) < 16 / 65535 / 2 and kl.same_top == 1.0
    with pytest.raises(bitnet.ShapeError, match="tokens stored"):
        kl_divergence(m, "something else entirely " * 10, base=str(base))


def test_logits_file_quantization_matches_llama_cpp_rules():
    """Log-probabilities within half a step of 1/65535 of the row's range; those at or below
    the floor (the row's minimum, at least max - 16) read back as the floor."""
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((5, 33)) * 6).astype(np.float32)
    logits[1] = 3.0  # a flat row: scale 0
    logits[2, 7] = 100.0  # everything else far below the 16-nat floor
    rec = quantize_rows(logits)
    assert rec.shape == (5, 2 * 17 + 4) and rec.dtype == np.uint16
    back = dequantize_rows(rec, 33)
    x = logits.astype(np.float64)
    top = x.max(1, keepdims=True)
    low = np.maximum(x.min(1, keepdims=True), top - 16)
    lse = np.log(np.exp(x - top).sum(1, keepdims=True))
    exact = x - top - lse
    floor = np.broadcast_to(low - top - lse, x.shape)
    above = x > low
    step = (top - low) / 65535
    assert np.all(np.abs(back - exact)[above] <= np.broadcast_to(step, x.shape)[above] / 2 + 1e-5)
    assert np.allclose(back[~above], floor[~above], atol=1e-5)
    assert np.allclose(back[1], -np.log(33), atol=1e-6)
    assert rec[:, -1].tolist() == [0] * 5  # the padding of an odd vocabulary


def test_logits_file_errors(tmp_path):
    bad = tmp_path / "bad.kld"
    bad.write_bytes(b"not a logits file at all")
    with pytest.raises(bitnet.FormatError, match=r"not a llama\.cpp log-probability file"):
        LogitsReader(bad)
    good = tmp_path / "good.kld"
    with LogitsWriter(good, 8, 10, list(range(8))) as w:
        w.write_rows(np.zeros((3, 10), dtype=np.float32))
    data = good.read_bytes()
    (tmp_path / "cut.kld").write_bytes(data[:-2])
    with pytest.raises(bitnet.FormatError, match="truncated"):
        LogitsReader(tmp_path / "cut.kld")
    (tmp_path / "ids.kld").write_bytes(data[:20] + np.int32(99).tobytes() + data[24:])
    with pytest.raises(bitnet.FormatError, match="token ids"):
        LogitsReader(tmp_path / "ids.kld")
