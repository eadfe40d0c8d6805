"""Generation: streaming, sampling options, stop strings, limits, interruption, threads."""

from __future__ import annotations

import os
import random
import signal
import threading

import numpy as np
import pytest

import bitnet
from bitnet import ShapeError
from bitnet.engine import TextStream
from bitnet.errors import ContextLengthError, ParameterError

PROMPT = "In the beginning God created"


@pytest.fixture(scope="module")
def model(converted):
    return bitnet.load(converted("2b4t-bf16"))


def greedy_ids(model, prompt: str, n: int) -> list[int]:
    """The greedy continuation computed from full-sequence logits, independently of generate."""
    ids = model.tokenize(prompt)
    out = []
    for _ in range(n):
        nxt = int(np.argmax(model.logits(ids + out)[-1]))
        if nxt in model.tokenizer.eos_ids:
            break
        out.append(nxt)
    return out


# -- TextStream ------------------------------------------------------------------------------

TEXT = "naïve café — 中文 🙂👩‍👩‍👧 ꙮ end"


@pytest.mark.parametrize("seed", range(6))
def test_split_characters_are_never_broken(seed):
    data = TEXT.encode()
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(data)), k=len(data) // 3)) if seed else []
    chunks = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    if seed == 0:
        chunks = [bytes([b]) for b in data]  # one byte at a time
    s = TextStream()
    pieces = [s.push(c) for c in chunks] + [s.flush()]
    assert "\ufffd" not in "".join(pieces)
    assert "".join(pieces) == TEXT
    for p in pieces:
        p.encode("utf-8")  # every piece is valid on its own


def test_invalid_bytes_become_replacement_characters():
    s = TextStream()
    out = s.push(b"ok \xff\xfe ") + s.push(b"\xe4\xb8") + s.flush()
    assert out == "ok \ufffd\ufffd \ufffd"


def test_stop_string_across_chunks_is_not_emitted():
    s = TextStream(stop=("</answer>", "STOP"))
    out = [s.push(b"The answer is 42</an"), s.push(b"swer"), s.push(b">"), s.push(b" more")]
    assert out == ["The answer is 42", "", "", ""]
    assert s.stopped and s.flush() == ""


def test_held_back_prefix_is_released_when_it_is_not_a_stop():
    s = TextStream(stop=("STOP",))
    assert s.push(b"go ST") == "go "
    assert s.push(b"OR") == "STOR"  # "STOR" cannot begin "STOP" any more
    assert s.push(b"E ST") == "E "
    assert s.flush() == "ST"  # the end: what was held back comes out


def test_earliest_stop_string_wins():
    s = TextStream(stop=("bbb", "ab"))
    assert s.push(b"xxabbb") == "xx"


def test_leading_space_stripped_once():
    s = TextStream(strip_leading_space=True)
    assert s.push(b"") + s.push(b" Hello") + s.push(b" world") == "Hello world"


def test_real_tokens_split_characters(model):
    """The fixture tokenizer spells rare characters byte by byte: pushing its token bytes
    gives whole characters only."""
    tok = model.tokenizer
    ids = tok.encode(TEXT)
    pieces = [tok.token_bytes(i) for i in ids]
    assert any(_invalid(p) for p in pieces), "the test needs a character split across tokens"
    s = TextStream()
    out = [s.push(p) for p in pieces] + [s.flush()]
    assert "".join(out) == TEXT and "\ufffd" not in "".join(out)


def _invalid(b: bytes) -> bool:
    try:
        b.decode()
    except UnicodeDecodeError:
        return True
    return False


# -- generate / stream -----------------------------------------------------------------------

SAMPLING = [
    {"temperature": 0},
    {"temperature": 0.8, "seed": 1},
    {"temperature": 1.5, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "seed": 2},
    {"temperature": 1.0, "top_k": 10, "top_p": 0.9, "min_p": 0.1, "seed": 3},
    {"temperature": 0.7, "repeat_penalty": 1.3, "repeat_last_n": 16, "seed": 4},
]


@pytest.mark.parametrize("options", SAMPLING, ids=str)
def test_stream_equals_generate(model, options):
    pieces = list(model.stream(PROMPT, max_tokens=40, **options))
    assert all(pieces)
    assert "".join(pieces) == model.generate(PROMPT, max_tokens=40, **options)


def test_greedy_equals_argmax_of_logits(model):
    ids = greedy_ids(model, PROMPT, 20)
    expected = b"".join(model.tokenizer.token_bytes(i) for i in ids).decode(errors="replace")
    assert model.generate(PROMPT, max_tokens=20, temperature=0) == expected


def test_seed_gives_the_same_text(model):
    texts = {model.generate(PROMPT, max_tokens=30, temperature=1.2, seed=s) for s in range(5)}
    assert len(texts) > 1  # different seeds, different texts
    for s in range(3):
        a = model.generate(PROMPT, max_tokens=30, temperature=1.2, seed=s)
        assert a == model.generate(PROMPT, max_tokens=30, temperature=1.2, seed=s)


def test_stop_string_spanning_tokens(model):
    ids = greedy_ids(model, PROMPT, 30)
    tok = model.tokenizer
    full = model.generate(PROMPT, max_tokens=30, temperature=0)
    # A stop string that starts inside one token and ends inside a later one.
    lengths = [len(tok.token_bytes(i)) for i in ids]
    text_bytes = full.encode()
    start = None
    pos = 0
    for i, n in enumerate(lengths[:-2]):
        if n >= 2 and lengths[i + 1] >= 1 and text_bytes[pos : pos + n].isascii():
            start = pos + n - 1
            break
        pos += n
    assert start is not None
    stop = text_bytes[start : start + 3].decode()
    cut = full.find(stop)
    out = model.generate(PROMPT, max_tokens=30, temperature=0, stop=[stop])
    assert out == full[:cut] and stop not in out
    assert "".join(model.stream(PROMPT, max_tokens=30, temperature=0, stop=[stop])) == out


def test_max_tokens_and_full_context(converted):
    small = bitnet.load(converted("2b4t-bf16"), n_ctx=24)
    ids = small.tokenize(PROMPT)
    assert small.generate(PROMPT, max_tokens=0) == ""
    n = len(greedy_ids(small, PROMPT, 5))
    assert small.generate(PROMPT, max_tokens=5, temperature=0) == small.generate(
        PROMPT, max_tokens=n, temperature=0
    )
    # The context ends generation cleanly: the prompt's tokens plus the generated ones fill it,
    # never more (OpenAI's accounting: prompt + completion tokens <= the context).
    room = 24 - len(ids)
    greedy = greedy_ids(small, PROMPT, room)
    assert len(greedy) == room  # no end token on the way: only the context stops it
    expected = b"".join(small.tokenizer.token_bytes(i) for i in greedy).decode(errors="replace")
    assert small.generate(PROMPT, max_tokens=500, temperature=0) == expected
    assert small.generate(PROMPT, max_tokens=500, seed=5) == small.generate(
        PROMPT, max_tokens=room, seed=5
    )
    c = small.complete(PROMPT, max_tokens=500, temperature=0)
    assert c.finish_reason == "context" and c.completion_tokens == room
    with pytest.raises(ContextLengthError, match="context holds 24"):
        small.generate(PROMPT * 10)
    with pytest.raises(ShapeError, match="context holds 24"):
        small.stream(PROMPT * 10)  # raised at the call, not at the first next()
    small.close()


def test_end_token_ends_generation(converted):
    small = bitnet.load(converted("2b4t-bf16"))
    greedy = greedy_ids(small, PROMPT, 6)
    small.tokenizer.eos_ids = [greedy[3]]  # the engine reads the end tokens when it is made
    c = small.complete(PROMPT, max_tokens=6, temperature=0)
    assert c.token_ids == tuple(greedy[:3]) and c.finish_reason == "stop"
    assert small.complete(PROMPT, max_tokens=6, temperature=0, ignore_eos=True).token_ids == tuple(
        greedy[:6]
    )
    small.close()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_tokens": -1}, "max_tokens"),
        ({"temperature": -0.5}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"min_p": 2}, "min_p"),
        ({"repeat_penalty": 0}, "repeat_penalty"),
        ({"seed": -1}, "seed"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"stop": [1]}, "stop"),
    ],
)
def test_bad_options_raise_at_the_call(model, options, message):
    with pytest.raises(ParameterError, match=message) as info:
        model.stream(PROMPT, **options)
    assert info.value.param == message
    with pytest.raises(ParameterError, match=message):
        bitnet.generate(PROMPT, model=model, **options)


def test_one_stop_string(model):
    full = model.generate(PROMPT, max_tokens=20, temperature=0)
    stop = full[3:6]
    assert (
        model.generate(PROMPT, max_tokens=20, temperature=0, stop=stop) == full[: full.find(stop)]
    )


def test_ctrl_c_during_stream_leaves_the_model_usable(model):
    expected = model.generate(PROMPT, max_tokens=25, temperature=0)

    def interrupted_by_the_consumer() -> None:
        for i, _ in enumerate(model.stream(PROMPT, max_tokens=25, temperature=0)):
            if i == 3:
                raise KeyboardInterrupt

    def streaming_forever() -> None:
        for _ in range(100_000):
            for _ in model.stream(PROMPT, max_tokens=200, temperature=1.0, seed=1):
                pass

    with pytest.raises(KeyboardInterrupt):
        interrupted_by_the_consumer()
    # A real SIGINT from outside while streams run: it lands wherever the main thread is,
    # mostly inside the generator (between decodes).
    timer = threading.Timer(0.2, os.kill, args=(os.getpid(), signal.SIGINT))
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        streaming_forever()
    timer.join()
    assert model.generate(PROMPT, max_tokens=25, temperature=0) == expected
    stream = model.stream(PROMPT, max_tokens=25, temperature=0)
    next(stream)
    del stream  # an abandoned stream gives its session back
    assert model.generate(PROMPT, max_tokens=25, temperature=0) == expected


def test_threads_share_one_model_safely(model):
    prompts = [PROMPT, "And the earth was", "The quick brown fox", "Numbers like 1234"]
    options = {"max_tokens": 30, "temperature": 0.9, "seed": 11}
    expected = {p: model.generate(p, **options) for p in prompts}
    logits_expected = model.logits(model.tokenize(prompts[1]))
    results: dict[tuple[int, str], str] = {}
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for rep in range(3):
                p = prompts[(k + rep) % len(prompts)]
                results[(k * 10 + rep, p)] = model.generate(p, **options)
                np.testing.assert_array_equal(
                    model.logits(model.tokenize(prompts[1])), logits_expected
                )
        except BaseException as e:  # noqa: BLE001 (the main thread reports it)
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 12
    for (_, p), text in results.items():
        assert text == expected[p]


def test_interleaved_streams_in_one_thread(model):
    a_text = model.generate(PROMPT, max_tokens=20, temperature=0)
    b_text = model.generate("The quick brown fox", max_tokens=20, seed=9)
    a = model.stream(PROMPT, max_tokens=20, temperature=0)
    b = model.stream("The quick brown fox", max_tokens=20, seed=9)
    got_a, got_b = [], []
    live = [(a, got_a), (b, got_b)]
    while live:  # one piece from each in turn
        for it, got in list(live):
            piece = next(it, None)
            if piece is None:
                live.remove((it, got))
            else:
                got.append(piece)
    assert "".join(got_a) == a_text and "".join(got_b) == b_text


# -- bitnet.generate -------------------------------------------------------------------------


def test_module_generate(model, converted):
    options = {"max_tokens": 12, "temperature": 0}
    expected = model.generate(PROMPT, **options)
    assert bitnet.generate(PROMPT, model=model, **options) == expected
    assert bitnet.generate(PROMPT, model=converted("2b4t-bf16"), **options) == expected
    assert bitnet.generate(PROMPT, model=str(converted("2b4t-bf16")), **options) == expected


def test_module_generate_without_a_bundled_model(monkeypatch):
    import importlib

    real = importlib.import_module

    def no_default(name, *args, **kwargs):
        if name == "bitnet.default_model":
            raise ModuleNotFoundError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(importlib, "import_module", no_default)
    with pytest.raises(bitnet.BitnetError, match="no bundled default model"):
        bitnet.generate("hi")
