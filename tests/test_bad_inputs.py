"""Every option of the Python API, wrong in type, range or boundary, raises ParameterError naming
it (never a pybind11 signature dump, a silent default or a truncation); values at the boundary
work."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import bitnet
from bitnet import BitnetError, FormatError, ShapeError, UnsupportedError, _core
from bitnet.checks import MAX_N_BATCH, MAX_N_CTX, max_threads
from bitnet.errors import ContextLengthError, ParameterError

MODEL = Path(__file__).parents[1] / "models" / "bitnet-kjv-5m-tq2_0.gguf"
N_VOCAB = 3072


@pytest.fixture(scope="module")
def model() -> bitnet.Model:
    return bitnet.load(MODEL, n_ctx=64)


def raises_param(name: str, fn, *args, **kwargs) -> ParameterError:
    with pytest.raises(ParameterError) as info:
        fn(*args, **kwargs)
    assert info.value.param == name
    assert name in str(info.value), str(info.value)
    assert "incompatible function arguments" not in str(info.value)
    return info.value


LOAD_CASES = [
    ("n_ctx", [-1, MAX_N_CTX + 1, 2**63, 1.5, "64", True, None]),
    ("n_batch", [0, -1, MAX_N_BATCH + 1, 2**63, 2.0, "8", False, None]),
    ("n_threads", [0, -1, max_threads() + 1, 1000, 10**9, 1.5, "2", True]),
    ("kv_cache", ["f8", "F16", "", 16, None]),
    ("output_type", ["q4_0", "", 1, None]),
    ("isa", ["", 3, b"avx2"]),
    ("kernel", ["fast", "", 1]),
    ("n_parallel", [0, -1, 4097, 1.5, True, None]),
    ("kv_budget", [0, -1, 1.5, "64", 2**41]),
    ("max_queue", [-1, 2**21, 1.5, None]),
]


@pytest.mark.parametrize(
    ("name", "value"), [(n, v) for n, values in LOAD_CASES for v in values], ids=repr
)
def test_load_option_out_of_range_or_wrong_type(name, value):
    err = raises_param(name, bitnet.load, MODEL, **{name: value})
    assert repr(value)[:20] in str(err) or str(value) in str(err)


@pytest.mark.parametrize(
    "options",
    [
        {"n_ctx": 1},
        {"n_ctx": 0},
        {"n_batch": 1, "n_parallel": 1},
        {"n_parallel": 16, "n_batch": 16},
        {"kv_budget": 16},
        {"max_queue": 0},
        {"n_threads": 1},
        {"n_threads": max_threads()},
        {"n_threads": None},
        {"kv_cache": "f16"},
        {"output_type": "f32"},
        {"kernel": "lut"},
        {"isa": "ref"},
    ],
    ids=repr,
)
def test_load_option_boundaries_work(options):
    model = bitnet.load(MODEL, **{"n_ctx": 16, **options})
    assert model.logits([1]).shape == (1, N_VOCAB)


def test_n_batch_below_n_parallel_and_small_kv_budget():
    raises_param("n_batch", bitnet.load, MODEL, n_batch=2, n_parallel=4)
    raises_param("kv_budget", bitnet.load, MODEL, n_ctx=64, kv_budget=63)


def test_unknown_isa_is_unsupported():
    with pytest.raises(UnsupportedError, match="'sse9'"):
        bitnet.load(MODEL, isa="sse9")


def test_context_beyond_memory_names_n_ctx_and_numbers(monkeypatch):
    monkeypatch.setattr(bitnet.checks, "memory_limit", lambda: (64 << 20, "a test limit"))
    err = raises_param("n_ctx", bitnet.load, MODEL, n_ctx=65536)
    assert "n_ctx=65536" in str(err) and "GiB" in str(err) and "a test limit" in str(err)
    # The default context comes from the file: the message names its key.
    monkeypatch.setattr(bitnet.checks, "memory_limit", lambda: (1 << 20, "a test limit"))
    err = raises_param("n_ctx", bitnet.load, MODEL)
    assert "bitnet.context_length" in str(err) and str(MODEL) in str(err)
    # An explicit engine budget is named when it is what does not fit.
    monkeypatch.setattr(bitnet.checks, "memory_limit", lambda: (64 << 20, "a test limit"))
    err = raises_param("kv_budget", bitnet.load, MODEL, n_ctx=64, kv_budget=10**7)
    assert "kv_budget=10000000" in str(err)


@pytest.mark.parametrize("path", [3, None, 1.5, ["m.gguf"]], ids=repr)
def test_path_of_wrong_type(path):
    raises_param("path", bitnet.load, path)


def test_path_with_nul():
    raises_param("path", bitnet.Model, "models/\0x.gguf")


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        bitnet.load(tmp_path / "absent.gguf")
    with pytest.raises(FormatError, match="is a directory"):
        bitnet.load(tmp_path)


# -- token ids -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "ids",
    [
        [1.7, 2.9],
        [1, 2.0],
        [True, 2],
        [],
        [-1],
        [N_VOCAB],
        [2**70],
        [[1, 2]],
        "abc",
        b"\x01\x02",
        np.array([1.0, 2.0]),
        np.array([[1, 2]]),
        np.array([True]),
        np.array([], dtype=np.int32),
        np.array([1, N_VOCAB], dtype=np.int64),
    ],
    ids=repr,
)
def test_logits_rejects_bad_ids(model, ids):
    raises_param("token_ids", model.logits, ids)


def test_logits_accepts_integer_types(model):
    ref = model.logits([1, 2, 3])
    for ids in (np.array([1, 2, 3], dtype=np.uint8), (np.int64(1), 2, np.int16(3)), range(1, 4)):
        assert np.array_equal(model.logits(ids), ref)


def test_logits_longer_than_context(model):
    with pytest.raises(ContextLengthError):
        model.logits([1] * 65)


def test_logits_in_batches_equal_one_pass():
    small = bitnet.load(MODEL, n_ctx=64, n_batch=5)
    whole = bitnet.load(MODEL, n_ctx=64, n_batch=64)
    ids = [int(i) for i in np.random.default_rng(0).integers(0, N_VOCAB, 23)]
    np.testing.assert_allclose(small.logits(ids), whole.logits(ids), rtol=0, atol=1e-4)


def test_ctrl_c_interrupts_logits_between_batches():
    """A long evaluation is run batch by batch, so a signal lands before it finishes."""
    model = bitnet.load(MODEL, n_ctx=256, n_batch=1, n_parallel=1)
    ids = [1 + i % 100 for i in range(256)]

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    def evaluate_with_alarm() -> None:  # armed inside pytest.raises
        signal.setitimer(signal.ITIMER_REAL, 0.001)  # 256 forward passes take far longer
        model.logits(ids)

    old = signal.signal(signal.SIGALRM, interrupt)
    try:
        with pytest.raises(KeyboardInterrupt):
            evaluate_with_alarm()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert model.logits(ids[:4]).shape == (4, N_VOCAB)  # still usable


def test_ctrl_c_cancels_a_long_prefill_on_the_engine():
    """generate() waits interruptibly while the engine thread prefills in n_batch chunks: Ctrl-C
    raises at once and cancels the request, so the rest of the prompt is never computed."""
    model = bitnet.load(MODEL, n_ctx=4096, n_batch=32, n_parallel=1)
    ids = [1 + i % 1000 for i in range(4000)]
    engine = model.engine
    main = threading.get_ident()

    def interrupt_once_started() -> None:  # SIGINT as soon as the first chunk has run
        while engine.stats().step_tokens_total == 0:
            time.sleep(0.001)
        signal.pthread_kill(main, signal.SIGINT)

    watcher = threading.Thread(target=interrupt_once_started)
    watcher.start()  # it waits for the engine's first step, which generate() starts
    with pytest.raises(KeyboardInterrupt):
        model.generate(ids, max_tokens=1)
    watcher.join()
    deadline = time.monotonic() + 30
    while engine.stats().running and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = engine.stats()
    assert stats.requests_finished["cancelled"] == 1 and stats.running == 0
    assert stats.step_tokens_total < len(ids)  # the prefill stopped part way
    assert model.generate(ids[:8], max_tokens=1, temperature=0)  # still usable


@pytest.mark.parametrize("ids", [[1.5], [-1], [N_VOCAB], "abc", [None]], ids=repr)
def test_detokenize_rejects_bad_ids(model, ids):
    raises_param("ids", model.detokenize, ids)


def test_detokenize_boundaries(model):
    assert model.detokenize([]) == ""
    assert isinstance(model.detokenize([0, N_VOCAB - 1]), str)


# -- text ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [b"hello", 3, None, ["a"]], ids=repr)
def test_tokenize_rejects_non_text(model, text):
    raises_param("text", model.tokenize, text)


def test_lone_surrogates_are_named(model):
    bad = "caf\udcc3 au lait"  # b"caf\xc3 ..." decoded with errors="surrogateescape"
    err = raises_param("text", model.tokenize, bad)
    assert "lone surrogate" in str(err) and "index 3" in str(err)
    raises_param("prompt", model.generate, bad, max_tokens=1)
    raises_param("text", model.tokenizer.encode, "\ud800")


@pytest.mark.parametrize(
    ("name", "value"), [("add_bos", 1), ("add_bos", "yes"), ("special", None), ("special", 0)]
)
def test_tokenize_flags(model, name, value):
    raises_param(name, model.tokenize, "hi", **{name: value})


# -- perplexity ----------------------------------------------------------------------------

TEXT = "In the beginning God created the heaven and the earth. " * 4


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("window", -1),
        ("window", 1.5),
        ("window", True),
        ("window", 1),
        ("stride", -1),
        ("stride", 2.0),
        ("stride", 65),
        ("progress", 1),
        ("text", 3),
        ("text", "\udcff"),
    ],
    ids=repr,
)
def test_perplexity_arguments(model, name, value):
    kwargs = {"window": 64, "stride": 0, "progress": False, "text": TEXT, name: value}
    text = kwargs.pop("text")
    raises_param(name, model.perplexity, text, **kwargs)


def test_perplexity_in_batches_equals_one_pass():
    small = bitnet.load(MODEL, n_ctx=64, n_batch=3, n_parallel=1)
    whole = bitnet.load(MODEL, n_ctx=64, n_batch=64)
    a = small.perplexity(TEXT, window=32, stride=16)
    b = whole.perplexity(TEXT, window=32, stride=16)
    assert a == pytest.approx(b, rel=1e-5)


# -- the extension itself: wrong arguments are ShapeErrors, not signature dumps -------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: _core.GgufFile(3),
        lambda: _core.GgufFile("a\0b"),
        lambda: _core.GgufFile(str(MODEL)).get(3),
        lambda: _core.GgufFile(str(MODEL)).value_type(None),
        lambda: _core.GgufFile(str(MODEL)).array_length(b"k"),
        lambda: _core.GgufFile(str(MODEL)).tensor_bytes(1.5),
        lambda: _core.type_name(2**64),
        lambda: _core.type_name(-1),
        lambda: _core.type_name("TQ2_0"),
        lambda: _core.Session(_core.Model(str(MODEL)), 2**63),
        lambda: _core.Session(_core.Model(str(MODEL)), 16, 1.5),
        lambda: _core.Session(_core.Model(str(MODEL)), 16, kv_f16=1),
        lambda: _core.Session("model"),
        lambda: _core.Session(_core.Model(str(MODEL)), 16).decode(np.array([1.7, 2.9]), True),
        lambda: _core.Session(_core.Model(str(MODEL)), 16).decode([1, 2], 1),
        lambda: _core.Session(_core.Model(str(MODEL)), 16).truncate(0.0),
        lambda: _core.KvCache(_core.Model(str(MODEL)), n_blocks=2**63),
        lambda: _core.KvCache(_core.Model(str(MODEL)), n_blocks=2.0),
        lambda: _core.KvCache(_core.Model(str(MODEL)), n_blocks=2, kv_type=16),
        lambda: _core.BatchDecoder(_core.Model(str(MODEL)), "cache"),
        lambda: _core.BatchDecoder(
            _core.Model(str(MODEL)), _core.KvCache(_core.Model(str(MODEL)), n_blocks=2)
        ).step(5),
        lambda: _core.BatchDecoder(
            _core.Model(str(MODEL)), _core.KvCache(_core.Model(str(MODEL)), n_blocks=2)
        ).step([(np.array([0], np.int32), 2**63, np.array([1], np.int32), 1)]),
    ],
)
def test_extension_argument_errors(call):
    with pytest.raises(ShapeError) as info:
        call()
    assert "incompatible function arguments" not in str(info.value)


def test_gguf_file_accepts_path_like_and_bytes():
    assert _core.GgufFile(MODEL).path == str(MODEL)
    assert _core.GgufFile(os.fsencode(MODEL)).version == 3
    assert str(MODEL).encode() in os.fsencode(_core.GgufFile(os.fsencode(MODEL)).path)


def test_errors_are_bitnet_errors():
    assert issubclass(ParameterError, BitnetError) and issubclass(ParameterError, ShapeError)
