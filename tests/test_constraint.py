"""Structured output (bitnet.engine.constraint): masks that keep text inside a JSON schema.

The oracle is independent of the matcher: texts are parsed with ``json`` and validated with
``jsonschema``. Two real tokenizers: the bundled model's 3k SentencePiece vocabulary and
LLaMA-3's 128k byte-level BPE (tests/tokenizer_assets.py). Random walks draw among the allowed
tokens only, so every text they finish must be valid whatever the tokens drawn.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("llguidance")
jsonschema = pytest.importorskip("jsonschema")

import tokenizer_assets as assets
from bitnet import _core
from bitnet.api import default_model_path
from bitnet.engine.constraint import (
    JsonVocabulary,
    make_constraint,
)
from bitnet.errors import ParameterError
from bitnet.tokenizer import Tokenizer, tokenizer_from_gguf

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "role": {"enum": ["admin", "user", "guest"]},
        "active": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 3},
        "address": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 10},
                "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            },
            "required": ["city", "zip"],
            "additionalProperties": False,
        },
    },
    "required": ["name", "age", "role", "address"],
    "additionalProperties": False,
}
ANSWER = {
    "name": "Ada",
    "age": 36,
    "role": "admin",
    "active": True,
    "tags": ["math"],
    "address": {"city": "London", "zip": "12345"},
}


@pytest.fixture(scope="module")
def bundled() -> Tokenizer:
    return tokenizer_from_gguf(_core.GgufFile(str(default_model_path())))


@pytest.fixture(scope="module")
def llama3(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    model_file = assets.llama3_model_file()
    if model_file is None:
        pytest.skip("llama-models is not installed (LLaMA-3 tokenizer)")
    path = tmp_path_factory.mktemp("llama3") / "llama3.gguf"
    assets.write_llama3_gguf(path, model_file)
    return tokenizer_from_gguf(_core.GgufFile(str(path)))


@pytest.fixture(scope="module", params=["bundled", "llama3"])
def vocab(request: pytest.FixtureRequest) -> tuple[Tokenizer, JsonVocabulary]:
    tok = request.getfixturevalue(request.param)
    return tok, JsonVocabulary(tok, tok.n_tokens + 5)  # logits rows beyond the tokenizer's


def _pieces(tok: Tokenizer, n: int) -> list[bytes]:
    return [tok.token_bytes(i) for i in range(n)]


def test_walks_a_valid_answer_and_finishes(vocab):
    """A model that wants ANSWER (as llguidance writes it) gets it token by token."""
    tok, v = vocab
    c = v.constraint(json.dumps(PERSON))
    text = json.dumps(ANSWER, separators=(", ", ": ")).encode()
    pieces = _pieces(tok, v.n_vocab)
    allowed = np.zeros(v.n_vocab, dtype=bool)
    while text:
        assert not c.is_finished()
        c.fill_mask(allowed)
        assert not allowed[tok.n_tokens :].any()  # rows without a token are never allowed
        best = max(
            (t for t in np.flatnonzero(allowed) if pieces[t] and text.startswith(pieces[t])),
            key=lambda t: len(pieces[t]),
        )
        c.accept(int(best))
        text = text[len(pieces[best]) :]
    assert c.is_accepting() and c.is_finished()
    c.fill_mask(allowed)
    assert set(np.flatnonzero(allowed)) <= set(tok.eos_ids)  # only end-of-sequence may follow
    assert allowed[list(tok.eos_ids)].any()


def test_mask_refuses_what_cannot_start_the_value(vocab):
    tok, v = vocab
    c = v.constraint(json.dumps(PERSON))
    allowed = np.zeros(v.n_vocab, dtype=bool)
    c.fill_mask(allowed)
    for i in np.flatnonzero(allowed):
        assert tok.token_bytes(int(i)).startswith(b"{")
    refused = next(i for i in range(tok.n_tokens) if tok.token_bytes(i) == b"a")
    assert not allowed[refused]
    # The engine thread never sees an exception: the request ends, the reason is kept.
    c.accept(refused)
    assert c.is_finished() and not c.is_accepting()
    assert "not allowed" in c.error
    c.fill_mask(allowed)
    assert set(np.flatnonzero(allowed)) == set(tok.eos_ids)


@pytest.mark.parametrize(
    "schema",
    [
        PERSON,
        {"type": "array", "items": {"enum": [1, 2, "three", None]}, "minItems": 1, "maxItems": 4},
        {
            "type": "object",
            "properties": {"ok": {"type": "boolean"}},
            "required": ["ok"],
            "additionalProperties": False,
        },
        {"enum": ["red", "green", "blue"]},
        {
            "type": "object",
            "properties": {
                "items": {
                    "type": "array",
                    "maxItems": 2,
                    "items": {
                        "type": "object",
                        "properties": {"id": {"type": "integer", "minimum": 0, "maximum": 99}},
                        "required": ["id"],
                        "additionalProperties": False,
                    },
                }
            },
            "required": ["items"],
            "additionalProperties": False,
        },
    ],
)
def test_random_walks_under_the_mask_always_validate(vocab, schema):
    """Whatever allowed tokens are drawn, a finished text parses and validates."""
    tok, v = vocab
    rng = np.random.default_rng(0)
    pieces = _pieces(tok, v.n_vocab)
    allowed = np.zeros(v.n_vocab, dtype=bool)
    finished = 0
    for _ in range(12):
        c = v.constraint(json.dumps(schema))
        out = b""
        for _ in range(400):
            c.fill_mask(allowed)
            ids = np.flatnonzero(allowed)
            assert ids.size, "an unfinished value always has a continuation"
            is_eos = np.isin(ids, tok.eos_ids)
            if is_eos.any() and (c.is_finished() or rng.random() < 0.5):
                break
            t = int(rng.choice(ids[~is_eos]))
            c.accept(t)
            out += pieces[t]
        else:
            continue
        finished += 1
        jsonschema.validate(json.loads(out.decode()), schema)
    assert finished >= 8


def test_any_object_for_json_object_mode(bundled):
    v = JsonVocabulary(bundled, bundled.n_tokens)
    c = v.constraint('{"type":"object"}')
    allowed = np.zeros(v.n_vocab, dtype=bool)
    c.fill_mask(allowed)
    assert allowed.any() and all(
        bundled.token_bytes(int(i)).startswith(b"{") for i in np.flatnonzero(allowed)
    )


@pytest.mark.parametrize(
    ("schema", "match"),
    [
        ('{"type": "objectx"}', "objectx"),
        ('{"$ref": "#/definitions/missing"}', "missing"),
        ("[1, 2]", "json_schema"),
    ],
)
def test_bad_schemas_name_json_schema(bundled, schema, match):
    v = JsonVocabulary(bundled, bundled.n_tokens)
    with pytest.raises(ParameterError, match=match) as e:
        v.constraint(schema)
    assert e.value.param == "json_schema"


def test_make_constraint_caches_the_view_per_model():
    import bitnet
    from bitnet.engine import constraint

    model = bitnet.load(default_model_path())
    first = make_constraint(model, '{"type":"object"}')
    assert constraint.vocabulary(model) is constraint.vocabulary(model)
    second = make_constraint(model, '{"type":"object"}')
    assert first is not second  # one matcher per request
    allowed = np.zeros(model.n_vocab, dtype=bool)
    second.fill_mask(allowed)
    assert allowed.any()


def test_tokenizer_view_splits_forced_text_exactly(bundled, llama3):
    """llguidance splits text the grammar forces with the view: the bytes must be exact (no
    SentencePiece dummy-prefix space), also for a part of a UTF-8 character."""
    from bitnet.engine.constraint import _TokenizerView

    for tok in (bundled, llama3):
        view = _TokenizerView(tok, tok.n_tokens)
        for text in [b'"name": "', b"}", b" ", b'{"a', "é".encode()[:1], "naïve €".encode()]:
            ids = view(text)
            assert b"".join(tok.token_bytes(i) for i in ids) == text
