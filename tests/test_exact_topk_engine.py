"""The exact-top-k output layer in the engine (``bitnet.load(..., exact_topk=True)``): a request's
sampled tokens are identical with and without it, for every option combination, alone and
batched, on the bundled model and on a converted random-weight fixture (where almost every row is
a candidate); requests whose draw needs every logit fall back to the full layer; and the sampler
draws the same token from a row that holds only the top-k (and forced) logits, -inf elsewhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import bitnet
from bitnet import _core
from bitnet.engine import SamplingParams

MODEL = Path(__file__).resolve().parent.parent / "models" / "bitnet-kjv-5m-tq2_0.gguf"
PROMPTS = [
    "And God said",
    "In the beginning God created the heaven and the earth. And the earth was without form",
    "Blessed are the",
    "And it came to pass, when",
]

# Options that use the top-k path (greedy: k = 1; top_k > 0: k = top_k), with temperatures that
# make 1/T inexact, top-p and min-p within the k, and penalties of both signs (forced tokens).
TOPK_OPTIONS: list[dict] = [
    {"temperature": 0},
    {"temperature": 0, "repeat_penalty": 1.3, "repeat_last_n": 16},
    {"temperature": 0, "presence_penalty": -1.5, "frequency_penalty": 0.4},
    {"temperature": 0.7, "top_k": 1},
    {"temperature": 0.7, "top_k": 2, "top_p": 1.0, "min_p": 0.0},
    {"temperature": 0.7, "top_k": 40},
    {"temperature": 1.5, "top_k": 5, "top_p": 0.8},
    {"temperature": 3.0, "top_k": 40, "top_p": 1.0, "min_p": 0.0},
    {"temperature": 0.3, "top_k": 20, "min_p": 0.2},
    {"temperature": 1.0, "top_k": 40, "repeat_penalty": 1.5, "repeat_last_n": 64},
    {"temperature": 0.9, "top_k": 12, "repeat_penalty": 0.8, "presence_penalty": 1.0},
    {"temperature": 1.2, "top_k": 30, "frequency_penalty": -0.7, "presence_penalty": -2.0},
    {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "frequency_penalty": 2.0},
]
# Options that need every logit: the full layer, with or without the pre-pass.
FULL_OPTIONS: list[dict] = [
    {"temperature": 0.8, "top_k": 0},
    {"temperature": 0.8, "top_k": 0, "top_p": 0.5},
    {"temperature": 0, "logprobs": True, "top_logprobs": 3},
    {"temperature": 0.8, "top_k": 40, "logprobs": True},
    {"temperature": 0.8, "top_k": 3000},  # above n_vocab / 8: not worth the pre-pass
]


def _requests(n_tokens: int) -> list[tuple[str, dict]]:
    out = []
    for i, o in enumerate(TOPK_OPTIONS + FULL_OPTIONS):
        opts = {"max_tokens": n_tokens, "ignore_eos": True, "seed": 100 + i, **o}
        out.append((PROMPTS[i % len(PROMPTS)], opts))
    return out


def _run(path: Path, requests: list[tuple[str, dict]], *, exact_topk: bool, batched: bool, **kw):
    """Token ids of every request, alone (one at a time) or all submitted at once; and stats."""
    n_parallel = len(requests) if batched else 1
    kw.setdefault("n_threads", 1)
    with bitnet.load(
        path, exact_topk=exact_topk, n_parallel=n_parallel, n_batch=max(16, n_parallel), **kw
    ) as m:
        handles = []
        results = []
        for prompt, opts in requests:
            h = m.submit(prompt, **opts)
            if batched:
                handles.append(h)
            else:
                results.append(h.result(timeout=120))
        results += [h.result(timeout=120) for h in handles]
        return [r.token_ids for r in results], m.engine.stats()


@pytest.mark.parametrize("batched", [False, True])
def test_bundled_model_tokens_identical_with_and_without(batched: bool) -> None:
    requests = _requests(160)
    want, plain = _run(MODEL, requests, exact_topk=False, batched=batched)
    got, stats = _run(MODEL, requests, exact_topk=True, batched=batched)
    for i, (g, w) in enumerate(zip(got, want, strict=True)):
        assert g == w, f"request {i} {requests[i][1]}: first difference at {_diff(g, w)}"
    assert plain.topk_rows_total == 0
    # Every draw of the top-k requests (and only theirs) went through the top-k path.
    assert stats.topk_rows_total == len(TOPK_OPTIONS) * 160
    # A trained model: few rows are recomputed (about 0.2% for greedy, more for k = 40).
    assert stats.topk_exact_rows_total < 0.1 * stats.topk_rows_total * 3072


def test_converted_random_fixture_tokens_identical(converted) -> None:
    # Random weights: no margin between the logits, nearly every row is a candidate, and the
    # top-k row is mostly recomputed exactly; still exactly the same tokens.
    path = converted("2b4t-bf16")
    vocab = bitnet.load(path).n_vocab
    requests = [(p, o) for p, o in _requests(120) if o.get("top_k", 1) * 8 <= vocab]
    for batched in (False, True):
        want, _ = _run(path, requests, exact_topk=False, batched=batched, n_ctx=200)
        got, stats = _run(path, requests, exact_topk=True, batched=batched, n_ctx=200)
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            assert g == w, f"request {i} {requests[i][1]}: first difference at {_diff(g, w)}"
        assert stats.topk_rows_total > 0


def test_two_threads_and_structured_output_identical() -> None:
    pytest.importorskip("llguidance")
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
        "required": ["name", "age"],
    }
    requests = [
        ("And God said", {"json_schema": schema, "temperature": 0, "max_tokens": 60}),
        ("Blessed", {"json_schema": schema, "top_k": 10, "seed": 4, "max_tokens": 60}),
        ("The", {"json_schema": True, "top_k": 3, "temperature": 1.3, "seed": 8}),
        ("And", {"top_k": 40, "repeat_penalty": 1.2, "seed": 1, "max_tokens": 100}),
    ]
    want, _ = _run(MODEL, requests, exact_topk=False, batched=True, n_threads=2)
    got, stats = _run(MODEL, requests, exact_topk=True, batched=True, n_threads=2)
    assert got == want
    assert stats.topk_rows_total > 0


def test_engine_option_and_model_reporting(converted) -> None:
    with bitnet.load(MODEL, exact_topk=True) as m:
        assert m.exact_topk and m.kernels["exact_topk"] and m.kernels["output"] == "q8_0"
        assert m.engine.exact_topk
        off = bitnet.engine.Engine(m, n_ctx=64, exact_topk=False)
        try:
            c = off.submit("And", SamplingParams(temperature=0, max_tokens=5)).result(timeout=30)
            assert c.completion_tokens == 5 and off.stats().topk_rows_total == 0
        finally:
            off.close()
    with bitnet.load(MODEL) as m:
        assert not m.exact_topk and not m.engine.exact_topk
        with pytest.raises(bitnet.UnsupportedError, match="exact_topk"):
            bitnet.engine.Engine(m, n_ctx=64, exact_topk=True)
    with pytest.raises(bitnet.ParameterError, match="exact_topk"):
        bitnet.load(MODEL, exact_topk=True, output_type="f32")
    with pytest.raises(bitnet.ParameterError, match="exact_topk"):
        bitnet.load(MODEL, exact_topk=1)  # type: ignore[arg-type]


def _diff(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


# -- the sampler on top-k rows ------------------------------------------------------------------


def _topk_row(
    full: np.ndarray,
    k: int,
    forced: np.ndarray,
    allowed: np.ndarray | None,
    rng: np.random.Generator,
) -> np.ndarray:
    """A row as the exact-top-k layer may return it: the forced tokens and every eligible token
    at or above the k-th largest eligible value exact, a random few more exact (candidates that
    were recomputed), everything else -inf."""
    eligible = np.ones(full.shape, bool) if allowed is None else allowed.astype(bool).copy()
    eligible[forced] = False
    keep = np.zeros(full.shape, bool)
    keep[forced] = True
    if eligible.any():
        vals = full[eligible]
        kth = np.sort(vals)[-min(k, vals.size)]
        keep |= eligible & (full >= kth)
    keep |= rng.random(full.shape) < 0.02
    return np.where(keep, full, -np.inf).astype(np.float32)


CASES = [
    {"temperature": 0.0, "top_k": 40},
    {"temperature": 0.0, "repeat_penalty": 1.4, "presence_penalty": -1.0},
    {"temperature": 0.7, "top_k": 1},
    {"temperature": 0.7, "top_k": 7, "top_p": 1.0, "min_p": 0.0},
    {"temperature": 0.7, "top_k": 40, "top_p": 0.9, "min_p": 0.05},
    {"temperature": 1.0, "top_k": 40, "top_p": 0.5, "min_p": 0.0},
    {"temperature": 1.9, "top_k": 64, "top_p": 0.97, "min_p": 0.01, "repeat_penalty": 0.7},
    {"temperature": 0.3, "top_k": 25, "min_p": 0.3, "frequency_penalty": 1.5},
    {"temperature": 1.3, "top_k": 10, "presence_penalty": -2.0, "frequency_penalty": -0.5},
    {"temperature": 3.0, "top_k": 500, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.2},
]


@pytest.mark.parametrize("cfg", CASES)
@pytest.mark.parametrize("masked", [False, True])
def test_sampler_draw_depends_only_on_the_top_k(cfg: dict, masked: bool) -> None:
    n_vocab = 3000
    rng = np.random.default_rng(hash((str(cfg), masked)) % (1 << 32))
    params = {"top_p": 1.0, "min_p": 0.0, "repeat_last_n": 32, **cfg}
    a = _core.Sampler(n_vocab, seed=5, **params)
    b = _core.Sampler(n_vocab, seed=5, **params)
    for t in rng.integers(0, n_vocab, 20):  # a prompt in the repetition window
        a.accept(int(t), False)
        b.accept(int(t), False)
    k = 1 if params["temperature"] == 0 else params["top_k"]
    allowed = (rng.random(n_vocab) < 0.6) if masked else None
    for step in range(150):
        full = (rng.standard_normal(n_vocab) * 3).astype(np.float32)
        if step % 3 == 0:  # exact ties around the top
            full[rng.integers(0, n_vocab, 30)] = np.float32(np.sort(full)[-k])
        forced = a.penalized_tokens()
        np.testing.assert_array_equal(forced, b.penalized_tokens())
        row = _topk_row(full, k, forced, allowed, rng)
        ta = a.sample(full, allowed)
        tb = b.sample(row, allowed)
        assert ta == tb, f"step {step}"
        a.accept(ta)
        b.accept(tb)


def test_sampler_top_k_is_taken_before_the_temperature_rounds() -> None:
    # 1/T with T = 0.7 rounds 3.3464458 and the float just below it to the same z. The token
    # with the smaller logit (and the smaller id) is not among the top 2 logits, so a top-k row
    # does not hold it; selecting top-k on z (ties by id) would pick it from the full row.
    hi = np.float32(3.3464458)
    lo = np.nextafter(hi, np.float32(0))
    c = np.float32(1) / np.float32(0.7)
    assert np.float32(hi * c) == np.float32(lo * c)  # the premise: they collapse
    full = np.full(64, -5.0, np.float32)
    full[10] = 6.0
    full[3] = lo
    full[20] = hi
    row = np.where(full >= hi, full, -np.inf).astype(np.float32)
    for seed in range(200):
        a = _core.Sampler(64, temperature=0.7, top_k=2, top_p=1.0, min_p=0.0, seed=seed)
        b = _core.Sampler(64, temperature=0.7, top_k=2, top_p=1.0, min_p=0.0, seed=seed)
        ids, _ = a.distribution(full)
        assert sorted(ids.tolist()) == [10, 20]
        assert a.sample(full) == b.sample(row)


def test_penalized_tokens() -> None:
    s = _core.Sampler(100, repeat_penalty=1.1, repeat_last_n=3, presence_penalty=0.0)
    assert s.penalized_tokens().tolist() == []
    for t in (5, 7, 5, 9):  # the window keeps the last 3: 7, 5, 9
        s.accept(t, False)
    assert s.penalized_tokens().tolist() == [5, 7, 9]
    p = _core.Sampler(100, repeat_penalty=1.0, frequency_penalty=0.5)
    p.accept(3, False)  # prompt tokens do not count for frequency and presence
    p.accept(42, True)
    p.accept(42, True)
    assert p.penalized_tokens().tolist() == [42]
    assert p.penalized_tokens().dtype == np.int32
    none = _core.Sampler(100, repeat_penalty=1.0)
    none.accept(1, True)
    assert none.penalized_tokens().tolist() == []


def test_serve_option_reaches_load() -> None:
    from bitnet.cli import build_parser
    from bitnet.server.cli import settings_from_args

    args = build_parser().parse_args(["serve", "--exact-topk"])
    assert settings_from_args(args).load_options()["exact_topk"] is True
    args = build_parser().parse_args(["serve"])
    assert settings_from_args(args).load_options()["exact_topk"] is False
