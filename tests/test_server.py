"""bitnet serve, talked to with the real ``openai`` client: completions and chat, streamed and
not, usage, finish reasons, n, stop, logprobs, structured output, token endpoints, metrics.

The server is uvicorn on 127.0.0.1 and a free port, serving the bundled model. A streamed answer
must equal the non-streamed one for the same seed (the engine is batch-invariant), and usage
must equal the tokenizer's counts.
"""

from __future__ import annotations

import json

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("uvicorn")
jsonschema = pytest.importorskip("jsonschema")

import bitnet
from bitnet.api import default_model_path
from bitnet.server import ServerSettings
from server_util import ServerThread, get, metric, post_json

PROMPT = "And God said, Let there be light"
CHAT = [{"role": "user", "content": "Who made the heaven and the earth?"}]
# The bundled model has no chat template of its own.
TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}assistant:"


@pytest.fixture(scope="module")
def model() -> bitnet.Model:
    return bitnet.load(default_model_path(), n_ctx=1024, n_parallel=4, max_queue=32, n_threads=1)


@pytest.fixture(scope="module")
def server(model):
    s = ServerThread(ServerSettings(model_id="kjv", chat_template=TEMPLATE), model=model)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=120)


def _completion_stream(client, **kw):
    text, chunks, usage, reasons = [], 0, None, []
    for ev in client.completions.create(stream=True, stream_options={"include_usage": True}, **kw):
        if ev.usage is not None:
            assert ev.choices == []
            usage = ev.usage
            continue
        chunks += 1
        for c in ev.choices:
            text.append(c.text)
            if c.finish_reason is not None:
                reasons.append(c.finish_reason)
    return "".join(text), usage, reasons


def test_models_lists_the_served_model(server, client, model):
    models = client.models.list()
    assert [m.id for m in models.data] == ["kjv"]
    assert client.models.retrieve("kjv").id == "kjv"
    status, _, body = get(server.url + "/models")  # llama-server's path, without /v1
    assert status == 200 and json.loads(body)["data"][0]["meta"]["n_ctx"] == model.n_ctx


def test_completion_streamed_equals_unstreamed_and_usage_is_the_tokenizers(client, model):
    kw = {"model": "kjv", "prompt": PROMPT, "max_tokens": 40, "temperature": 0.9, "seed": 11}
    whole = client.completions.create(**kw, logprobs=0)
    text, usage, reasons = _completion_stream(client, **kw)
    assert text == whole.choices[0].text and text
    assert usage.prompt_tokens == whole.usage.prompt_tokens == len(model.tokenize(PROMPT))
    assert usage.completion_tokens == whole.usage.completion_tokens
    assert reasons == [whole.choices[0].finish_reason]
    # One log-probability entry per generated token; their bytes make the text.
    lp = whole.choices[0].logprobs
    assert len(lp.tokens) == whole.usage.completion_tokens
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens


def test_completion_matches_the_python_api(client, model):
    whole = client.completions.create(
        model="kjv", prompt=PROMPT, max_tokens=30, temperature=0.7, seed=5, top_p=0.9
    )
    done = model.complete(
        PROMPT, max_tokens=30, temperature=0.7, seed=5, top_p=0.9, top_k=0, min_p=0.0
    )
    assert whole.choices[0].text == done.text
    assert whole.usage.completion_tokens == done.completion_tokens


def test_chat_streamed_equals_unstreamed(client, model):
    kw = {"model": "kjv", "messages": CHAT, "max_completion_tokens": 30, "seed": 3}
    whole = client.chat.completions.create(**kw)
    assert whole.object == "chat.completion"
    assert whole.choices[0].message.role == "assistant"
    events = list(
        client.chat.completions.create(**kw, stream=True, stream_options={"include_usage": True})
    )
    assert events[0].choices[0].delta.role == "assistant"
    assert len({e.id for e in events}) == 1
    text = "".join(e.choices[0].delta.content or "" for e in events if e.choices)
    assert text == whole.choices[0].message.content
    assert events[-1].usage.completion_tokens == whole.usage.completion_tokens
    prompt = model.apply_chat_template(CHAT, chat_template=TEMPLATE)
    assert events[-1].usage.prompt_tokens == len(model.tokenize(prompt))
    finals = [
        e.choices[0].finish_reason for e in events if e.choices and e.choices[0].finish_reason
    ]
    assert finals == [whole.choices[0].finish_reason]
    assert all(e.usage is None for e in events[:-1])


def test_finish_reasons(client, model):
    r = client.completions.create(model="kjv", prompt=PROMPT, max_tokens=5, seed=1)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 5
    # A full context is "length" too (the engine's "context").
    r = client.completions.create(
        model="kjv", prompt=PROMPT, seed=1, extra_body={"ignore_eos": True}
    )
    assert r.choices[0].finish_reason == "length"
    # The last token sampled needs no KV position, so prompt + generated may reach n_ctx + 1.
    assert model.n_ctx <= r.usage.total_tokens <= model.n_ctx + 1
    # A stop string ends it and is not in the text.
    free = client.completions.create(
        model="kjv", prompt=PROMPT, max_tokens=40, seed=2, temperature=0
    )
    word = free.choices[0].text.split()[3]
    r = client.completions.create(
        model="kjv", prompt=PROMPT, max_tokens=40, seed=2, temperature=0, stop=[word]
    )
    assert r.choices[0].finish_reason == "stop"
    assert word not in r.choices[0].text and free.choices[0].text.startswith(r.choices[0].text)


def test_n_choices_use_consecutive_seeds(client):
    kw = {"model": "kjv", "prompt": PROMPT, "max_tokens": 20, "temperature": 1.0}
    r = client.completions.create(**kw, n=3, seed=100)
    assert [c.index for c in r.choices] == [0, 1, 2]
    for c in r.choices:
        alone = client.completions.create(**kw, seed=100 + c.index)
        assert c.text == alone.choices[0].text
    assert r.usage.completion_tokens == sum(
        client.completions.create(**kw, seed=100 + i).usage.completion_tokens for i in range(3)
    )
    # Streamed, the choices interleave but each assembles to the same text.
    texts = ["", "", ""]
    for ev in client.completions.create(**kw, n=3, seed=100, stream=True):
        for c in ev.choices:
            texts[c.index] += c.text
    assert texts == [c.text for c in r.choices]
    # Several prompts: a choice per prompt and n.
    kw["prompt"] = [PROMPT, "In the beginning"]
    r = client.completions.create(**kw, n=2, seed=1)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]


def test_chat_logprobs_shape(client):
    r = client.chat.completions.create(
        model="kjv", messages=CHAT, max_tokens=8, seed=4, logprobs=True, top_logprobs=3
    )
    content = r.choices[0].logprobs.content
    assert len(content) == r.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[-1].logprob
        assert isinstance(entry.bytes, list)
    joined = b"".join(bytes(e.bytes) for e in content).decode()
    # A SentencePiece reply drops the leading space of its first token, as Model.chat does.
    assert joined in (r.choices[0].message.content, " " + r.choices[0].message.content)
    # Streamed: the same entries, spread over the chunks.
    streamed = [
        e
        for ev in client.chat.completions.create(
            model="kjv",
            messages=CHAT,
            max_tokens=8,
            seed=4,
            logprobs=True,
            top_logprobs=3,
            stream=True,
        )
        if ev.choices and ev.choices[0].logprobs
        for e in ev.choices[0].logprobs.content
    ]
    assert [e.token for e in streamed] == [e.token for e in content]


def test_completion_logprobs_legacy_shape(client):
    r = client.completions.create(model="kjv", prompt=PROMPT, max_tokens=6, seed=9, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 6
    assert all(1 <= len(top) <= 2 for top in lp.top_logprobs)
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)


def test_echo_puts_the_prompt_first(client):
    r = client.completions.create(model="kjv", prompt=PROMPT, max_tokens=5, seed=1, echo=True)
    assert r.choices[0].text.startswith(PROMPT)


SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 999},
        "tribe": {"enum": ["Judah", "Levi", "Benjamin"]},
        "sons": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
        "home": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 12}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "tribe", "sons", "home"],
    "additionalProperties": False,
}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_json_schema_output_parses_and_validates(client, seed):
    fmt = {
        "type": "json_schema",
        "json_schema": {"name": "person", "schema": SCHEMA, "strict": True},
    }
    r = client.chat.completions.create(
        model="kjv", messages=CHAT, max_tokens=400, seed=seed, temperature=1.0, response_format=fmt
    )
    assert r.choices[0].finish_reason == "stop"
    value = json.loads(r.choices[0].message.content)
    jsonschema.validate(value, SCHEMA)
    assert list(value) == list(SCHEMA["properties"])  # in the schema's order, as OpenAI's
    streamed = "".join(
        ev.choices[0].delta.content or ""
        for ev in client.chat.completions.create(
            model="kjv",
            messages=CHAT,
            max_tokens=400,
            seed=seed,
            temperature=1.0,
            response_format=fmt,
            stream=True,
        )
        if ev.choices
    )
    assert streamed == r.choices[0].message.content


def test_json_object_mode_and_completions(client):
    r = client.chat.completions.create(
        model="kjv",
        messages=CHAT,
        max_tokens=300,
        seed=8,
        response_format={"type": "json_object"},
        extra_body={"top_k": 5},
    )
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:
        assert r.choices[0].message.content.startswith("{")
    schema = {
        "type": "array",
        "items": {"type": "integer", "minimum": 0, "maximum": 9},
        "maxItems": 4,
    }
    r = client.completions.create(
        model="kjv", prompt=PROMPT, max_tokens=100, seed=1, extra_body={"json_schema": schema}
    )
    jsonschema.validate(json.loads(r.choices[0].text), schema)


def test_python_api_json_schema_goes_through_the_engine(model):
    schema = {
        "type": "object",
        "properties": {"ok": {"type": "boolean"}},
        "required": ["ok"],
        "additionalProperties": False,
    }
    text = model.generate(PROMPT, max_tokens=50, seed=1, json_schema=schema)
    assert isinstance(json.loads(text)["ok"], bool)


def test_tokenize_and_detokenize(server, model):
    status, _, body = post_json(server.url + "/tokenize", {"content": PROMPT})
    assert status == 200 and body["tokens"] == model.tokenize(PROMPT, add_bos=False)
    status, _, with_bos = post_json(
        server.url + "/tokenize", {"content": PROMPT, "add_special": True}
    )
    assert with_bos["tokens"] == model.tokenize(PROMPT)
    status, _, pieces = post_json(
        server.url + "/tokenize", {"content": PROMPT, "with_pieces": True}
    )
    assert "".join(p["piece"] for p in pieces["tokens"]).strip() == PROMPT
    status, _, text = post_json(server.url + "/detokenize", {"tokens": body["tokens"]})
    assert status == 200 and text["content"].strip() == PROMPT


def test_health_and_metrics(server, client):
    status, _, body = get(server.url + "/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}
    before = metric(server.url, "bitnet_generated_tokens_total")
    client.completions.create(model="kjv", prompt=PROMPT, max_tokens=7, seed=1)
    assert metric(server.url, "bitnet_generated_tokens_total") >= before + 7
    assert metric(server.url, "bitnet_requests_running") == 0
    assert metric(server.url, "bitnet_kv_tokens_capacity") > 0
    assert metric(server.url, "bitnet_time_to_first_token_seconds_count") >= 1


def test_chat_without_a_template_uses_the_default_one(model):
    from bitnet import chat

    if not hasattr(chat, "DEFAULT_CHAT_TEMPLATE"):
        pytest.skip("this build has no default chat template")
    s = ServerThread(ServerSettings(), model=bitnet.load(default_model_path(), n_threads=1))
    try:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="x", max_retries=0)
        r = client.chat.completions.create(
            model=s.state.model_id, messages=CHAT, max_tokens=60, seed=1
        )
        assert r.choices[0].finish_reason in ("stop", "length")
        for marker in chat.DEFAULT_CHAT_STOP:
            assert marker not in r.choices[0].message.content
    finally:
        s.stop()
