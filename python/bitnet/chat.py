"""Chat templates: the Jinja2 template stored with a model, rendered in a sandbox.

A model without a template of its own (``tokenizer.chat_template``) is given
:data:`DEFAULT_CHAT_TEMPLATE`, a plain-text, role-tagged layout that any tokenizer can encode
(no special tokens), with :data:`DEFAULT_CHAT_STOP` ending each reply; the command line and the
server both use it.

The environment is set up like Hugging Face transformers' ``apply_chat_template`` so that the
templates written for it render the same text here: blocks trim their newline and leading
whitespace, ``loopcontrols`` is on, ``tojson`` keeps non-ASCII characters, templates may call
``raise_exception(message)`` and ``strftime_now(format)``, and the ``{% generation %}`` marker
(used by transformers for assistant masks) renders its body. The sandbox stops templates from
reaching Python internals; the template is data from the model file.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from .errors import FormatError

__all__ = ["DEFAULT_CHAT_STOP", "DEFAULT_CHAT_TEMPLATE", "TemplateError", "render_chat_template"]

DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}: {{ message['content'] | trim }}\n\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}"
)
"""The chat template of models that have none: each message as ``Role: text`` and a blank line,
then ``Assistant:`` to open the reply. Rendered, a system prompt and one question read::

    System: You are concise.

    User: Name a prime number.

    Assistant:

Plain text in a form base models have seen in their training data (dialogues, transcripts),
so any tokenizer encodes it and any model can continue it; a model never trained on it will
not end its turn with an end-of-sequence token, so replies also end at :data:`DEFAULT_CHAT_STOP`.
"""

DEFAULT_CHAT_STOP = ("\nUser:", "\nSystem:", "\nAssistant:")
"""Stop strings that end a reply under :data:`DEFAULT_CHAT_TEMPLATE`: the model starting the
next turn itself."""


class TemplateError(FormatError):
    """A chat template does not parse, or refused the messages (``raise_exception``)."""


def _raise_exception(message: str) -> None:
    raise TemplateError(f"chat template: {message}")


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # Unlike Jinja2's own filter this does not HTML-escape: the output is a prompt, not a page.
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


@functools.lru_cache(maxsize=8)
def _compile(template: str) -> Any:
    from jinja2 import TemplateSyntaxError, nodes
    from jinja2.ext import Extension
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationBlock(Extension):
        """``{% generation %}...{% endgeneration %}`` renders its body unchanged."""

        tags = {"generation"}  # noqa: RUF012 (Jinja2 reads it as a class attribute)

        def parse(self, parser: Any) -> list[nodes.Node]:
            next(parser.stream)
            body: list[nodes.Node] = parser.parse_statements(
                ("name:endgeneration",), drop_needle=True
            )
            return body

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[GenerationBlock, "jinja2.ext.loopcontrols"],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    try:
        return env.from_string(template)
    except TemplateSyntaxError as e:
        raise TemplateError(f"chat template does not parse: {e} (line {e.lineno})") from e


def render_chat_template(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    add_generation_prompt: bool = True,
    bos_token: str = "",
    eos_token: str = "",
    tools: Sequence[Mapping[str, Any]] | None = None,
    **variables: Any,
) -> str:
    """Renders a conversation with a chat template.

    Args:
        template: The Jinja2 source (a model's ``tokenizer.chat_template``).
        messages: Dicts with at least "role" and "content".
        add_generation_prompt: End with the text that opens the assistant's reply.
        bos_token: The beginning-of-sequence token's text, visible to the template.
        eos_token: The end-of-sequence token's text, visible to the template.
        tools: Tool descriptions (JSON schemas) for templates that support tool use.
        **variables: Further variables for the template.

    Returns:
        The prompt text, with special tokens written out (``"<|eot_id|>"``).

    Raises:
        TemplateError: The template does not parse, fails, or rejects the messages.

    Example:
        >>> render_chat_template(
        ...     "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\\n{% endfor %}",
        ...     [{"role": "user", "content": "hi"}],
        ... )
        'user: hi\\n'
    """
    from jinja2 import TemplateError as JinjaError

    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m:
            raise TypeError(f"messages[{i}] must be a mapping with a 'role' key, got {m!r}")
    compiled = _compile(template)
    try:
        return str(
            compiled.render(
                messages=[dict(m) for m in messages],
                add_generation_prompt=add_generation_prompt,
                bos_token=bos_token,
                eos_token=eos_token,
                tools=[dict(t) for t in tools] if tools is not None else None,
                documents=None,
                **variables,
            )
        )
    except JinjaError as e:
        raise TemplateError(f"chat template failed: {e}") from e
