"""Every error row of docs/serving.md provoked, status and body asserted; hostile bodies never
give a 500 (and never take the server down).

Error bodies are OpenAI's envelope: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import time

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")

import bitnet
from bitnet.api import default_model_path
from bitnet.server import ServerSettings
from server_util import ServerThread, get, metric, post_json, request, sse_events

PROMPT = "In the beginning"


def _load(**kw):
    opts = {"n_ctx": 512, "n_parallel": 2, "max_queue": 8, "n_threads": 1}
    return bitnet.load(default_model_path(), **{**opts, **kw})


@pytest.fixture(scope="module")
def server():
    s = ServerThread(ServerSettings(model_id="kjv", max_body_bytes=64 * 1024), model=_load())
    yield s
    s.stop()


def _envelope(body, status_type: str, param=None, code=None) -> dict:
    assert set(body) == {"error"}, body
    err = body["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert isinstance(err["message"], str) and err["message"]
    assert err["type"] == status_type
    assert code is None or err["code"] == code
    if param is not None:
        assert err["param"] == param
    return err


URL = "/v1/completions"


@pytest.mark.parametrize(
    ("body", "param", "needle"),
    [
        ({"prompt": PROMPT, "max_tokens": -1}, "max_tokens", "max_tokens"),
        ({"prompt": PROMPT, "max_tokens": "ten"}, "max_tokens", "integer"),
        ({"prompt": PROMPT, "max_tokens": 1.5}, "max_tokens", "integer"),
        ({"prompt": PROMPT, "temperature": "hot"}, "temperature", "number"),
        ({"prompt": PROMPT, "temperature": -1}, "temperature", "temperature"),
        ({"prompt": PROMPT, "top_p": 0}, "top_p", "top_p"),
        ({"prompt": PROMPT, "top_p": 1.5}, "top_p", "top_p"),
        ({"prompt": PROMPT, "presence_penalty": 3}, "presence_penalty", "presence_penalty"),
        ({"prompt": PROMPT, "frequency_penalty": -2.5}, "frequency_penalty", "frequency"),
        ({"prompt": PROMPT, "n": 0}, "n", "n"),
        ({"prompt": PROMPT, "n": 1000}, "n", "n"),
        ({"prompt": PROMPT, "seed": -7}, "seed", "seed"),
        ({"prompt": PROMPT, "seed": "x"}, "seed", "integer"),
        ({"prompt": PROMPT, "stop": 5}, "stop", "stop"),
        ({"prompt": PROMPT, "stop": ["a", 1]}, "stop", "stop"),
        ({"prompt": PROMPT, "logprobs": 21}, "logprobs", "logprobs"),
        ({"prompt": PROMPT, "stream": "yes"}, "stream", "true or false"),
        ({"prompt": PROMPT, "stream_options": []}, "stream_options", "object"),
        ({"prompt": 5}, "prompt", "prompt"),
        ({"prompt": []}, "prompt", "prompt"),
        ({"prompt": [[]]}, "prompt", "prompt"),
        ({"prompt": [1, 2, 99999999]}, "prompt", "99999999"),
        ({"prompt": [-1]}, "prompt", "-1"),
        ({}, "prompt", "required"),
        ({"prompt": PROMPT, "model": 7}, "model", "string"),
        ({"prompt": PROMPT, "suffix": "x"}, "suffix", "suffix"),
        ({"prompt": PROMPT, "logit_bias": {"1": 5}}, "logit_bias", "logit_bias"),
        ({"prompt": PROMPT, "echo": True, "logprobs": 1}, "echo", "echo"),
        ({"prompt": PROMPT, "response_format": {"type": "xml"}}, "response_format", "xml"),
        ({"prompt": PROMPT, "response_format": "json"}, "response_format", "response_format"),
        (
            {
                "prompt": PROMPT,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"schema": {"type": "nope"}},
                },
            },
            "response_format",
            "nope",
        ),
        ({"prompt": PROMPT, "json_schema": [1]}, "json_schema", "json_schema"),
    ],
)
def test_invalid_parameters_are_400_naming_the_parameter(server, body, param, needle):
    status, _, out = post_json(server.url + URL, body)
    assert status == 400, out
    err = _envelope(out, "invalid_request_error", param=param)
    assert needle in err["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "messages"),
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content",
        ),
        ({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}, "top_logprobs"),
        (
            {"messages": [{"role": "user", "content": "x"}], "max_completion_tokens": -3},
            "max_completion_tokens",
        ),
        (
            {"messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
            "tools",
        ),
        ({"messages": ["x"]}, "messages[0]"),
    ],
)
def test_invalid_chat_bodies_are_400(server, body, param):
    status, _, out = post_json(server.url + "/v1/chat/completions", body)
    assert status == 400, out
    _envelope(out, "invalid_request_error", param=param)


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"not json",
        b"[1, 2]",
        b'"text"',
        b"",
        b"   ",
        b"\xff\xfe{}",
        b'{"prompt": NaN}',
        b'{"prompt": "x", "max_tokens": Infinity}',
        b"[" * 5000 + b"]" * 5000,
        b'{"a":' * 200 + b"1" + b"}" * 200,
    ],
)
def test_malformed_json_is_400(server, raw):
    status, _, out = post_json(server.url + URL, raw)
    assert status == 400
    _envelope(out, "invalid_request_error", code="invalid_json")


def test_unknown_model_and_route_are_404(server):
    status, _, out = post_json(server.url + URL, {"prompt": PROMPT, "model": "gpt-4"})
    assert status == 404
    err = _envelope(out, "not_found_error", param="model", code="model_not_found")
    assert "gpt-4" in err["message"] and "kjv" in err["message"]
    status, _, out = request(server.url + "/v1/models/gpt-4")
    assert status == 404
    status, _, out = post_json(server.url + "/v1/embeddings", {"input": "x"})
    assert status == 404
    _envelope(out, "not_found_error", code="unknown_route")
    status, _, out = request(server.url + URL)  # GET on a POST route
    assert status == 405
    _envelope(json.loads(out), "invalid_request_error", code="method_not_allowed")


def test_body_too_large_is_413(server):
    big = {"prompt": "x" * (100 * 1024)}
    status, _, out = post_json(server.url + URL, big)
    assert status == 413
    err = _envelope(out, "invalid_request_error", code="request_too_large")
    assert str(64 * 1024) in err["message"]
    # Without Content-Length (chunked), the limit still holds.
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    chunks = (b"x" * 8192 for _ in range(20))
    conn.request(
        "POST", URL, body=chunks, headers={"Content-Type": "application/json"}, encode_chunked=True
    )
    resp = conn.getresponse()
    assert resp.status == 413
    conn.close()


def test_prompt_longer_than_context_is_400_with_both_numbers(server):
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    long_prompt = "And it came to pass " * 200
    n = len(server.state.model.tokenize(long_prompt))
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="kjv", prompt=long_prompt, max_tokens=4)
    err = e.value.body
    assert err["code"] == "context_length_exceeded" and err["param"] == "prompt"
    assert str(n) in err["message"] and "512" in err["message"]
    status, _, out = post_json(
        server.url + "/v1/chat/completions",
        {"messages": [{"role": "user", "content": long_prompt}]},
    )
    assert status == 400 and out["error"]["param"] == "messages"


def test_api_key_is_required_when_set():
    s = ServerThread(ServerSettings(api_keys=("sk-one", "sk-two")), model=_load())
    try:
        for headers in (
            {},
            {"Authorization": "Bearer sk-wrong"},
            {"X-Api-Key": "sk-on"},
            {"Authorization": "Basic sk-one"},
        ):
            status, _, out = post_json(s.url + URL, {"prompt": PROMPT, "max_tokens": 1}, headers)
            assert status == 401, headers
            _envelope(out, "authentication_error", code="invalid_api_key")
        for headers in (
            {"Authorization": "Bearer sk-one"},
            {"authorization": "bearer sk-two"},
            {"X-Api-Key": "sk-two"},
        ):
            status, _, out = post_json(s.url + URL, {"prompt": PROMPT, "max_tokens": 1}, headers)
            assert status == 200, (headers, out)
        assert get(s.url + "/health")[0] == 200  # health needs no key
        assert get(s.url + "/metrics")[0] == 401
        assert get(s.url + "/v1/models", {"Authorization": "Bearer sk-one"})[0] == 200
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="sk-wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            client.models.list()
    finally:
        s.stop()


def test_full_queue_is_503_with_retry_after():
    s = ServerThread(ServerSettings(), model=_load(n_ctx=4096, n_parallel=1, max_queue=1))
    long = {"prompt": PROMPT, "max_tokens": 4000, "ignore_eos": True, "stream": True}
    running = sse_events(s.url, URL, long)
    waiting = socket.create_connection(("127.0.0.1", s.port))
    try:
        assert isinstance(next(running), dict)  # one runs ...
        payload = json.dumps(long).encode()
        waiting.sendall(  # ... one waits ...
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
        )
        deadline = time.monotonic() + 30
        while metric(s.url, "bitnet_requests_waiting") < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        status, headers, out = post_json(s.url + URL, {"prompt": PROMPT, "max_tokens": 2})
        assert status == 503  # ... and the queue is full
        _envelope(out, "unavailable_error", code="queue_full")
        assert 1 <= int(headers["retry-after"]) <= 120
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError) as e:
            client.completions.create(model=s.state.model_id, prompt=PROMPT, max_tokens=2)
        assert e.value.status_code == 503
    finally:
        waiting.close()
        running.close()
        s.stop()


HOSTILE = [
    {"prompt": None},
    {"prompt": {"a": 1}},
    {"prompt": [1.5]},
    {"prompt": [True]},
    {"prompt": ["a", ["b"]]},
    {"prompt": PROMPT, "max_tokens": 10**30},
    {"prompt": PROMPT, "seed": 2**70},
    {"prompt": PROMPT, "n": True},
    {"prompt": PROMPT, "temperature": 1e308 * 10},
    {"prompt": PROMPT, "top_k": -5},
    {"prompt": PROMPT, "min_p": 2},
    {"prompt": PROMPT, "repeat_penalty": 0},
    {"prompt": PROMPT, "repeat_last_n": -1},
    {"prompt": PROMPT, "stop": ["x" * 5000]},
    {"prompt": PROMPT, "stop": ["s"] * 100},
    {"prompt": PROMPT, "best_of": 5},
    {"prompt": PROMPT, "stream_options": {"include_usage": "yes"}},
    {"prompt": PROMPT, "response_format": {"type": "json_schema"}},
    {"prompt": PROMPT, "response_format": {"type": "json_schema", "json_schema": {"schema": []}}},
    {
        "prompt": PROMPT,
        "response_format": {"type": "json_schema", "json_schema": {"schema": {"$ref": "#/x"}}},
    },
    {
        "prompt": PROMPT,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"schema": {"type": "string", "pattern": "(("}},
        },
    },
    {"prompt": "\x00\ud7ff\ufffd" * 10, "max_tokens": 2},
    {"prompt": "<s></s><unk>", "max_tokens": 2},
    {"messages": [{"role": "user", "content": "x"}]},  # chat fields on the completions route
    {"prompt": PROMPT, "ignore_eos": "no"},
    {"prompt": PROMPT, "tool_choice": {"type": "function"}},
    {"prompt": PROMPT, "logprobs": True},
]


def test_hostile_bodies_never_give_500(server):
    for body in HOSTILE:
        for path in (URL, "/v1/chat/completions", "/tokenize", "/detokenize"):
            status, _, out = post_json(server.url + path, body)
            assert status < 500, (path, body, out)
            if status != 200:
                _envelope(out, out["error"]["type"])
    # Random mutations of a valid body: values swapped for values of other types.
    rng = random.Random(0)
    values = [
        None,
        True,
        -1,
        0,
        2**64,
        1e300,
        -0.0,
        "",
        "x" * 300,
        [],
        [None],
        {},
        {"type": None},
        [[1]],
        "\ud800",
    ]
    keys = [
        "prompt",
        "messages",
        "max_tokens",
        "temperature",
        "top_p",
        "n",
        "stop",
        "seed",
        "stream",
        "logprobs",
        "top_logprobs",
        "response_format",
        "stream_options",
        "json_schema",
        "content",
        "tokens",
        "model",
        "echo",
        "presence_penalty",
        "top_k",
        "with_pieces",
        "add_special",
    ]
    for _ in range(150):
        body = {"prompt": PROMPT, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
        for key in rng.sample(keys, 3):
            body[key] = rng.choice(values)
        path = rng.choice([URL, "/v1/chat/completions", "/tokenize", "/detokenize"])
        raw = json.dumps(body).encode()
        status, _, out = post_json(server.url + path, raw)
        assert status < 500, (path, body, out)
    assert get(server.url + "/health")[0] == 200


def test_a_streamed_request_with_a_bad_parameter_is_a_plain_400(server):
    # A parameter error is known before streaming starts: no stream is opened.
    status, _, out = post_json(server.url + URL, {"prompt": PROMPT, "stream": True, "top_p": 7})
    assert status == 400 and out["error"]["param"] == "top_p"
