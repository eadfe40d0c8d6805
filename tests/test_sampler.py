"""The C++ sampler against a plain numpy statement of the same rules, and against transformers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bitnet import ShapeError, _core


def reference_distribution(
    logits: np.ndarray,
    *,
    temperature: float,
    top_k: int = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    repeat_penalty: float = 1.0,
    history: tuple[int, ...] = (),
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    generated: tuple[int, ...] = (),
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """Probabilities (n_vocab,) of the next token, by full sorting: the sampler's spec."""
    z = penalized(
        logits,
        repeat_penalty=repeat_penalty,
        history=history,
        presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty,
        generated=generated,
        allowed=allowed,
    )
    if temperature == 0:
        p = np.zeros_like(z)
        p[int(np.argmax(z))] = 1.0
        return p
    z = z / temperature
    order = sorted(range(len(z)), key=lambda i: (-z[i], i))  # descending, ties by id
    order = [i for i in order if z[i] != -np.inf]
    keep = order[:top_k] if 0 < top_k < len(order) else order
    w = np.exp(z[keep] - z[keep[0]])
    total = w.sum()
    n = len(keep)
    if top_p < 1:
        above = np.concatenate([[0.0], np.cumsum(w)[:-1]]) / total
        n = int(np.sum(above < top_p))
    if min_p > 0:
        n = min(n, int(np.sum(w / w[0] >= min_p)))
    p = np.zeros_like(z)
    p[keep[:n]] = w[:n] / w[:n].sum()
    return p


def penalized(
    logits: np.ndarray,
    *,
    repeat_penalty: float = 1.0,
    history: tuple[int, ...] = (),
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    generated: tuple[int, ...] = (),
    allowed: np.ndarray | None = None,
) -> np.ndarray:
    """Step 1 in float64: Hugging Face's repetition penalty over the window, then OpenAI's
    documented formula mu[j] - c[j] * frequency_penalty - (c[j] > 0) * presence_penalty over the
    generated tokens, then the mask."""
    z = logits.astype(np.float64).copy()
    for t in set(history):
        z[t] = z[t] / repeat_penalty if z[t] > 0 else z[t] * repeat_penalty
    counts = np.bincount(np.asarray(generated, dtype=np.int64), minlength=len(z))
    z -= counts * frequency_penalty + (counts > 0) * presence_penalty
    if allowed is not None:
        z[~allowed] = -np.inf
    return z


def log_softmax(z: np.ndarray) -> np.ndarray:
    top = z[np.isfinite(z)].max()
    return z - (top + np.log(np.exp(z - top).sum()))


def chi_square_p_value(counts: np.ndarray, expected: np.ndarray) -> float:
    """Upper tail of the chi-square statistic (Wilson-Hilferty approximation), bins with an
    expected count under 5 pooled into one."""
    small = expected < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(expected[~small], expected[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    stat = float(((obs - exp) ** 2 / exp).sum())
    k = len(exp) - 1
    if k < 1:
        return 1.0
    z = ((stat / k) ** (1 / 3) - (1 - 2 / (9 * k))) / math.sqrt(2 / (9 * k))
    return 0.5 * math.erfc(z / math.sqrt(2))


LOGITS = np.linspace(4.0, -4.0, 48).astype(np.float32)[np.random.default_rng(7).permutation(48)]

CONFIGS = [
    {"temperature": 1.0},
    {"temperature": 0.6},
    {"temperature": 1.7},
    {"temperature": 1.0, "top_k": 5},
    {"temperature": 1.0, "top_p": 0.7},
    {"temperature": 1.0, "min_p": 0.08},
    {"temperature": 0.9, "top_k": 20, "top_p": 0.9, "min_p": 0.05},
    {"temperature": 1.2, "top_p": 0.5, "repeat_penalty": 1.8, "history": (3, 3, 10, 40)},
]


PENALTY_CONFIGS = [
    {"temperature": 1.0, "presence_penalty": 1.5, "generated": (3, 17, 17, 40)},
    {"temperature": 0.8, "frequency_penalty": 0.7, "generated": (3, 17, 17, 17, 40)},
    {"temperature": 1.0, "presence_penalty": -2.0, "frequency_penalty": 2.0, "generated": (5, 5)},
    {
        "temperature": 1.1,
        "top_k": 12,
        "repeat_penalty": 1.4,
        "history": (1, 2, 3),
        "presence_penalty": 0.5,
        "frequency_penalty": 0.25,
        "generated": (2, 2, 30),
    },
]
MASK = np.random.default_rng(5).random(48) < 0.6


def make_sampler(n_vocab: int, cfg: dict, seed: int = 1234) -> _core.Sampler:
    skip = ("history", "generated", "allowed")
    args = {k: v for k, v in cfg.items() if k not in skip}
    s = _core.Sampler(
        n_vocab,
        temperature=args.get("temperature", 1.0),
        top_k=args.get("top_k", 0),
        top_p=args.get("top_p", 1.0),
        min_p=args.get("min_p", 0.0),
        repeat_penalty=args.get("repeat_penalty", 1.0),
        repeat_last_n=64,
        presence_penalty=args.get("presence_penalty", 0.0),
        frequency_penalty=args.get("frequency_penalty", 0.0),
        seed=seed,
    )
    for t in cfg.get("history", ()):
        s.accept(t, generated=False)  # a prompt token: the window only, no counts
    for t in cfg.get("generated", ()):
        s.accept(t)
    return s


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_distribution_matches_reference(cfg):
    s = make_sampler(len(LOGITS), cfg)
    ids, probs = s.distribution(LOGITS)
    expected = reference_distribution(LOGITS, **cfg)
    got = np.zeros(len(LOGITS))
    got[ids] = probs
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-12)  # float32 logits
    assert list(ids) == sorted(ids, key=lambda i: -expected[i])


@pytest.mark.parametrize("cfg", PENALTY_CONFIGS, ids=str)
@pytest.mark.parametrize("masked", [False, True])
def test_penalties_and_mask_match_reference(cfg, masked):
    allowed = MASK if masked else None
    s = make_sampler(len(LOGITS), cfg)
    ids, probs = s.distribution(LOGITS, allowed)
    expected = reference_distribution(LOGITS, **cfg, allowed=allowed)
    got = np.zeros(len(LOGITS))
    got[ids] = probs
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-12)
    if masked:
        assert MASK[ids].all()
        draws = [s.sample(LOGITS, allowed) for _ in range(300)]
        assert MASK[draws].all()


def test_prompt_tokens_do_not_count_for_presence_and_frequency():
    s = make_sampler(len(LOGITS), {"temperature": 0.0, "presence_penalty": 2.0})
    best = int(np.argmax(LOGITS))
    for _ in range(5):
        s.accept(best, generated=False)
    assert s.sample(LOGITS) == best
    s.accept(best)
    assert s.sample(LOGITS) != best  # 2 below its logit now: the runner-up wins (gap < 2)


def test_reset_forgets_counts():
    s = make_sampler(len(LOGITS), {"temperature": 0.0, "frequency_penalty": 2.0})
    best = int(np.argmax(LOGITS))
    s.accept(best)
    assert s.sample(LOGITS) != best
    s.reset(0)
    assert s.sample(LOGITS) == best


@pytest.mark.parametrize("cfg", [*CONFIGS[:4], *PENALTY_CONFIGS], ids=str)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("n_threads", [1, 3])
def test_batch_sampler_equals_one_at_a_time(cfg, masked, n_threads):
    """Rows drawn together (on several threads), asking for log-probabilities or not, give the
    tokens each sampler gives alone."""
    rng = np.random.default_rng(11)
    rows = (rng.standard_normal((7, 48)) * 3).astype(np.float32)
    allowed = MASK if masked else None
    alone = [make_sampler(48, cfg, seed=100 + i) for i in range(7)]
    batched = [make_sampler(48, cfg, seed=100 + i) for i in range(7)]
    bs = _core.BatchSampler(n_threads)
    assert bs.n_threads == n_threads
    n_top = [5, -1, 0, 48, 3, 2, 1]
    for _ in range(6):
        expected = [s.sample(r, allowed) for s, r in zip(alone, rows, strict=True)]
        tokens, logprob, top_ids, top_lp = bs.sample(batched, rows, [allowed] * 7, n_top)
        assert tokens.tolist() == expected
        for s, t in zip(alone, expected, strict=True):
            s.accept(t)
        for s, t in zip(batched, tokens.tolist(), strict=True):
            s.accept(t)
        assert top_ids.shape == top_lp.shape == (7, 48)
        assert np.isnan(logprob[1]) and (top_ids[1] == -1).all() and (top_ids[2] == -1).all()


def test_logprobs_are_log_softmax_after_penalties_and_mask():
    rng = np.random.default_rng(12)
    cfg = PENALTY_CONFIGS[3]
    for masked in (False, True):
        allowed = MASK if masked else None
        s = make_sampler(48, cfg, seed=3)
        generated = list(cfg["generated"])
        history = list(cfg["history"]) + generated
        bs = _core.BatchSampler(1)
        for _ in range(5):
            row = (rng.standard_normal(48) * 3).astype(np.float32)
            ref = log_softmax(
                penalized(
                    row,
                    repeat_penalty=cfg["repeat_penalty"],
                    history=tuple(history[-64:]),
                    presence_penalty=cfg["presence_penalty"],
                    frequency_penalty=cfg["frequency_penalty"],
                    generated=tuple(generated),
                    allowed=allowed,
                )
            )
            tokens, logprob, top_ids, top_lp = bs.sample([s], row[None, :], [allowed], [4])
            t = int(tokens[0])
            assert logprob[0] == pytest.approx(ref[t], abs=1e-5)
            order = sorted(range(48), key=lambda i: (-ref[i], i))[:4]
            assert top_ids[0].tolist() == order
            np.testing.assert_allclose(top_lp[0], ref[order], atol=1e-5)
            s.accept(t)
            generated.append(t)
            history.append(t)


def test_greedy_logprobs_and_masked_alternatives():
    s = _core.Sampler(4, temperature=0.0)
    logits = np.array([1.0, 3.0, 2.0, 0.5], dtype=np.float32)
    allowed = np.array([True, False, True, False])
    tokens, logprob, top_ids, top_lp = _core.BatchSampler().sample(
        [s], logits[None], [allowed], [4]
    )
    assert tokens[0] == 2
    ref = log_softmax(np.where(allowed, logits.astype(np.float64), -np.inf))
    assert logprob[0] == pytest.approx(ref[2], abs=1e-6)
    assert top_ids[0].tolist() == [2, 0, -1, -1]  # masked tokens have probability 0: not listed
    assert top_lp[0, 2] == -np.inf


def test_batch_sampler_errors():
    s = _core.Sampler(4)
    bs = _core.BatchSampler(2)
    logits = np.zeros((2, 4), dtype=np.float32)
    with pytest.raises(ShapeError, match="one row per sampler"):
        bs.sample([s], logits)
    with pytest.raises(ShapeError, match="twice"):
        bs.sample([s, s], logits)
    with pytest.raises(ShapeError, match="n_vocab"):
        bs.sample([_core.Sampler(5), s], logits)
    with pytest.raises(ShapeError, match="row 1: cannot sample"):
        bs.sample([s, _core.Sampler(4)], logits, [None, np.zeros(4, dtype=bool)])
    with pytest.raises(ShapeError, match="n_vocab = 4"):
        bs.sample([s, _core.Sampler(4)], logits, [None, np.ones(3, dtype=bool)])
    with pytest.raises(ShapeError, match="one mask"):
        bs.sample([s, _core.Sampler(4)], logits, [None])


@pytest.mark.parametrize("cfg", CONFIGS, ids=str)
def test_samples_follow_the_distribution(cfg):
    """Empirical frequencies of 20000 seeded draws against the expected probabilities."""
    n = 20000
    s = make_sampler(len(LOGITS), cfg, seed=99)
    counts = np.bincount([s.sample(LOGITS) for _ in range(n)], minlength=len(LOGITS))
    expected = reference_distribution(LOGITS, **cfg) * n
    assert counts[expected == 0].sum() == 0, "a filtered-out token was drawn"
    assert chi_square_p_value(counts, expected) > 1e-4


def test_reference_agrees_with_transformers():
    """The numpy statement above means what transformers' warpers mean (no ties in LOGITS)."""
    torch = pytest.importorskip("torch")
    lp = pytest.importorskip("transformers.generation.logits_process")
    for cfg in CONFIGS:
        scores = torch.tensor(LOGITS[None, :], dtype=torch.float64)
        history = torch.tensor([list(cfg.get("history", ())) or [0]])
        if cfg.get("repeat_penalty", 1.0) != 1.0:
            scores = lp.RepetitionPenaltyLogitsProcessor(cfg["repeat_penalty"])(history, scores)
        warpers = [lp.TemperatureLogitsWarper(cfg["temperature"])]
        if cfg.get("top_k"):
            warpers.append(lp.TopKLogitsWarper(cfg["top_k"]))
        if cfg.get("top_p", 1.0) < 1:
            warpers.append(lp.TopPLogitsWarper(cfg["top_p"]))
        if cfg.get("min_p"):
            warpers.append(lp.MinPLogitsWarper(cfg["min_p"]))
        for w in warpers:
            scores = w(history, scores)
        expected = torch.softmax(scores, -1)[0].numpy()
        np.testing.assert_allclose(reference_distribution(LOGITS, **cfg), expected, atol=1e-9)


@pytest.mark.parametrize(
    "cfg",
    [
        {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05},
        {"temperature": 1.0, "top_p": 0.9},
        {"temperature": 1.0, "top_p": 0.999},
        {"temperature": 1.0, "top_k": 5000, "top_p": 0.8},
        {"temperature": 2.0, "min_p": 0.01},
    ],
    ids=str,
)
def test_large_vocabulary_partial_selection_is_exact(cfg):
    """128k logits with many ties: the partial selection keeps exactly the sorted prefix."""
    rng = np.random.default_rng(3)
    logits = np.round(rng.standard_normal(128256) * 3, 2).astype(np.float32)  # ties abound
    s = make_sampler(len(logits), cfg)
    ids, probs = s.distribution(logits)
    expected = reference_distribution(logits, **cfg)
    keep = np.flatnonzero(expected)
    assert sorted(ids.tolist()) == keep.tolist()
    np.testing.assert_allclose(probs, expected[ids], rtol=1e-5, atol=1e-12)


def test_seeded_determinism_and_reset():
    rng = np.random.default_rng(0)
    rows = rng.standard_normal((50, 1000)).astype(np.float32)
    a = _core.Sampler(1000, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=42)
    b = _core.Sampler(1000, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=42)
    c = _core.Sampler(1000, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=43)
    draws_a = [a.sample(r) for r in rows]
    assert draws_a == [b.sample(r) for r in rows]
    assert draws_a != [c.sample(r) for r in rows]
    a.reset(42)
    assert [a.sample(r) for r in rows] == draws_a
    assert a.seed == 42


def test_temperature_zero_is_greedy_with_penalty_and_lowest_id_ties():
    logits = np.array([1.0, 3.0, 3.0, -2.0], dtype=np.float32)
    s = _core.Sampler(4, temperature=0.0)
    assert all(s.sample(logits) == 1 for _ in range(10))
    s = _core.Sampler(4, temperature=0.0, repeat_penalty=2.0)
    s.accept(1)
    assert s.sample(logits) == 2  # 3/2 < 3
    s.accept(2)
    assert s.sample(logits) == 1  # both 3s halved to 1.5, still above 1: the lower id wins


def test_repeat_window_forgets_old_tokens():
    logits = np.array([2.0, 1.9], dtype=np.float32)
    s = _core.Sampler(2, temperature=0.0, repeat_penalty=1.5, repeat_last_n=2)
    s.accept(0)
    assert s.sample(logits) == 1
    s.accept(1)
    s.accept(1)  # token 0 left the window of 2
    assert s.sample(logits) == 0


def test_nan_and_inf_logits():
    s = _core.Sampler(3, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    logits = np.array([np.nan, 1.0, -np.inf], dtype=np.float32)
    assert all(s.sample(logits) == 1 for _ in range(20))
    with pytest.raises(ShapeError, match="NaN, -inf"):
        s.sample(np.array([np.nan, -np.inf, np.nan], dtype=np.float32))
    assert _core.Sampler(2, temperature=1e-30).sample(np.array([1, 2], np.float32)) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"min_p": -0.1}, "min_p"),
        ({"repeat_penalty": 0.0}, "repeat_penalty"),
        ({"repeat_last_n": -1}, "repeat_last_n"),
        ({"temperature": float("nan")}, "temperature"),
        ({"presence_penalty": float("inf")}, "presence_penalty"),
        ({"frequency_penalty": float("nan")}, "frequency_penalty"),
    ],
)
def test_invalid_parameters(kwargs, message):
    with pytest.raises(ShapeError, match=message):
        _core.Sampler(10, **kwargs)


def test_wrong_logits_shape_and_token():
    s = _core.Sampler(10)
    with pytest.raises(ShapeError, match="n_vocab = 10"):
        s.sample(np.zeros(9, dtype=np.float32))
    with pytest.raises(ShapeError, match="out of range"):
        s.accept(10)
