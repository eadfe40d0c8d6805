"""Chat templates render like transformers' apply_chat_template; chat reuses the KV cache."""

from __future__ import annotations

import jinja2
import pytest

import bitnet
from bitnet import TemplateError, UnsupportedError
from bitnet.chat import render_chat_template

LLAMA3_STYLE = (
    "{{ bos_token }}{% for m in messages %}"
    "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim"
    " + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}"
)

# Block tags on their own lines: only right with trim_blocks and lstrip_blocks on.
CHATML_STYLE = """{% if messages[0]['role'] != 'system' %}
<|im_start|>system
You are a helpful assistant.<|im_end|>
{% endif %}
{% for message in messages %}
    {% if loop.first and tools is not none %}
<|im_start|>tools
{{ tools | tojson }}<|im_end|>
    {% endif %}
<|im_start|>{{ message['role'] }}
{% if message['role'] == 'assistant' %}{% generation %}{{ message['content'] }}{% endgeneration %}
{% else %}{{ message['content'] }}{% endif %}<|im_end|>
{% endfor %}
{% if add_generation_prompt %}
<|im_start|>assistant
{% endif %}"""

ALTERNATING = (
    "{% set ns = namespace(turn=0) %}{% for m in messages %}"
    "{% if (m['role'] == 'user') != (ns.turn % 2 == 0) %}"
    "{{ raise_exception('roles must alternate user/assistant') }}{% endif %}"
    "{% if m['role'] == 'user' %}{{ bos_token + '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% else %}{{ ' ' + m['content'] + eos_token }}{% endif %}"
    "{% set ns.turn = ns.turn + 1 %}{% endfor %}"
)

TEMPLATES = {"llama3": LLAMA3_STYLE, "chatml": CHATML_STYLE, "alternating": ALTERNATING}

CONVERSATIONS = [
    [{"role": "user", "content": "Hi!"}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "  Why?  "}],
    [
        {"role": "user", "content": "Café, 中文, 🙂?"},
        {"role": "assistant", "content": "Oui. <|eot_id|> stays text here."},
        {"role": "user", "content": "Line one\nline two"},
    ],
]


@pytest.fixture(scope="module")
def hf_tokenizer(hf_models):
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_file=str(hf_models["2b4t-bf16"].path / "tokenizer.json"),
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
    )


@pytest.mark.parametrize("name", TEMPLATES)
@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_render_equals_transformers(hf_tokenizer, name, conversation, add_generation_prompt):
    messages = CONVERSATIONS[conversation]
    template = TEMPLATES[name]
    try:
        expected = hf_tokenizer.apply_chat_template(
            messages,
            chat_template=template,
            tokenize=False,
            add_generation_prompt=add_generation_prompt,
        )
    except jinja2.TemplateError as e:  # the template refused the messages: so must we
        with pytest.raises(TemplateError, match="alternate"):
            render_chat_template(template, messages, bos_token="<|begin_of_text|>")
        assert "alternate" in str(e)
        return
    got = render_chat_template(
        template,
        messages,
        add_generation_prompt=add_generation_prompt,
        bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>",
    )
    assert got == expected


def test_tools_render_like_transformers(hf_tokenizer):
    tools = [{"type": "function", "function": {"name": "météo", "parameters": {}}}]
    messages = CONVERSATIONS[0]
    expected = hf_tokenizer.apply_chat_template(
        messages,
        chat_template=CHATML_STYLE,
        tools=tools,
        tokenize=False,
        add_generation_prompt=True,
    )
    assert render_chat_template(CHATML_STYLE, messages, tools=tools) == expected
    assert "météo" in expected  # tojson keeps non-ASCII


def test_sandbox_and_syntax_errors():
    with pytest.raises(TemplateError, match="does not parse"):
        render_chat_template("{% for %}", CONVERSATIONS[0])
    with pytest.raises(TemplateError):  # no access to Python internals
        render_chat_template("{{ messages.__class__.__mro__ }}", CONVERSATIONS[0])
    with pytest.raises(TemplateError):  # immutable: templates cannot change the messages
        render_chat_template("{{ messages.append(1) }}", CONVERSATIONS[0])
    with pytest.raises(TypeError, match="role"):
        render_chat_template(LLAMA3_STYLE, [{"content": "no role"}])


@pytest.fixture(scope="module")
def model(converted):
    return bitnet.load(converted("2b4t-bf16"))


def test_model_template_equals_transformers(model, hf_models, hf_tokenizer):
    from hf_fixtures import CHAT_TEMPLATE

    assert model.chat_template == CHAT_TEMPLATE  # stored by the converter
    for messages in CONVERSATIONS:
        expected = hf_tokenizer.apply_chat_template(
            messages, chat_template=CHAT_TEMPLATE, tokenize=False, add_generation_prompt=True
        )
        assert model.apply_chat_template(messages) == expected


def test_chat_equals_generate_on_the_rendered_prompt(model):
    messages = CONVERSATIONS[1]
    prompt = model.apply_chat_template(messages)
    options = {"max_tokens": 24, "temperature": 0.9, "seed": 5}
    reply = model.chat(messages, **options)
    assert reply == model.generate(prompt, **options)
    assert "".join(model.chat_stream(messages, **options)) == reply
    ids = model.tokenize(prompt)
    assert ids.count(model.tokenizer.bos_id) == 1  # the template's text gets one BOS


def test_next_turn_reuses_the_cache(converted):
    """The engine's prefix cache holds the first turn: the second computes little more than
    what is new, and the reply is what a fresh model gives."""
    options = {"max_tokens": 16, "temperature": 0.8, "seed": 3}
    model = bitnet.load(converted("2b4t-bf16"))
    turn1 = [
        {"role": "user", "content": "In the beginning God created the heaven and the earth. " * 3}
    ]
    reply1 = model.chat(turn1, **options)
    turn2 = [*turn1, {"role": "assistant", "content": reply1}, {"role": "user", "content": "And?"}]
    done = model.chat_complete(turn2, **options)

    prompt1 = model.tokenize(model.apply_chat_template(turn1))
    prompt2 = model.tokenize(model.apply_chat_template(turn2))
    common = next(
        (i for i, (a, b) in enumerate(zip(prompt1, prompt2, strict=False)) if a != b),
        min(len(prompt1), len(prompt2)),
    )
    bt = model.engine.block_tokens
    assert common >= bt, "the test needs a shared prefix of at least one block"
    computed = done.timings.prompt_tokens_computed
    assert computed <= len(prompt2) - common // bt * bt  # the shared full blocks were reused
    fresh = bitnet.load(converted("2b4t-bf16"))
    assert fresh.chat(turn2, **options) == done.text  # reuse changes nothing in the result


def test_chat_without_template(converted):
    spm_model = bitnet.load(converted("1bitllm"))
    messages = [{"role": "user", "content": "hello"}]
    with pytest.raises(UnsupportedError, match="no chat template"):
        spm_model.chat(messages)
    template = "{% for m in messages %}{{ bos_token }}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    rendered = spm_model.apply_chat_template(messages, chat_template=template)
    assert rendered == "<s>[INST] hello [/INST]"
    options = {"max_tokens": 12, "temperature": 0}
    reply = spm_model.chat(messages, chat_template=template, **options)
    continuation = spm_model.generate(rendered, **options)
    # SentencePiece: a reply starts a new text, so its dummy-prefix space is dropped.
    assert reply == (continuation.removeprefix(" "))
