"""Request bodies of the OpenAI-compatible endpoints, checked field by field.

``parse_chat`` and ``parse_completion`` turn a decoded JSON body into a :class:`ParsedRequest`
(a prompt or messages, :class:`~bitnet.engine.SamplingParams`, n, streaming options) or raise
:class:`~bitnet.server.errors.APIError` 400 naming the field, what was expected and what was
found. Fields follow OpenAI's API; llama-server's sampling extras (``top_k``, ``min_p``,
``repeat_penalty``, ``repeat_last_n``, ``ignore_eos``, a top-level ``json_schema``) are accepted
too. Fields that only describe the caller (``user``, ``metadata``, ``store``) and unknown fields
are ignored, as vLLM does; fields that would change the output in a way bitnet cannot honour
(``tools``, ``logit_bias``, ``suffix``, ``echo`` with ``logprobs``) are refused.

Defaults are OpenAI's, not the Python API's: temperature 1, top_p 1, no top-k or min-p, and no
max_tokens (the request ends at end-of-sequence, a stop string or a full context).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..engine.params import MAX_TOP_LOGPROBS, SamplingParams
from ..errors import ParameterError
from .errors import APIError, bad_request

__all__ = ["MAX_N", "ParsedRequest", "decode_json_body", "parse_chat", "parse_completion"]

MAX_N = 16  # choices per request
_UNLIMITED = 1 << 30  # "no max_tokens": the context ends the request
_ROLES = ("system", "developer", "user", "assistant", "tool")
_MAX_DEPTH = 64  # nesting of a request body (json_schema included)


@dataclass(frozen=True)
class ParsedRequest:
    """A checked request of /v1/chat/completions or /v1/completions.

    Attributes:
        endpoint: "chat" or "completions".
        model: The model the client named, or None.
        prompts: Completions: each prompt, text or token ids (a choice per prompt and n).
        messages: Chat: the conversation, with text content.
        params: Sampling options of the first choice (choice i of a seeded request uses seed
            + i: :meth:`params_for`).
        n: Choices per prompt.
        stream: Answer with server-sent events.
        include_usage: Streaming: end with a chunk carrying ``usage``.
        completion_logprobs: Completions: the legacy ``logprobs`` count, or None.
        echo: Completions: put the prompt in front of the text.
        param_names: Engine option names to the names the client used, for errors.
    """

    endpoint: Literal["chat", "completions"]
    model: str | None
    prompts: tuple[str | tuple[int, ...], ...]
    messages: tuple[dict[str, Any], ...]
    params: SamplingParams
    n: int
    stream: bool
    include_usage: bool
    completion_logprobs: int | None
    echo: bool
    param_names: Mapping[str, str]

    def params_for(self, index: int) -> SamplingParams:
        """The options of choice ``index`` (0 <= index < n): seed + index when seeded."""
        if index == 0 or self.params.seed is None:
            return self.params
        return dataclasses.replace(self.params, seed=(self.params.seed + index) % (1 << 64))


def decode_json_body(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object.

    Raises:
        APIError: 400 when it is not UTF-8 JSON, holds NaN or Infinity, nests deeper than 64
            levels, or is not an object.
    """

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    if not raw.strip():
        raise bad_request("The request body is empty; send a JSON object.", code="invalid_json")
    try:
        body = json.loads(raw, parse_constant=no_constants)
    except RecursionError:
        raise bad_request("The request body nests too deeply.", code="invalid_json") from None
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise bad_request(f"The request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request(
            f"The request body must be a JSON object, got {type(body).__name__}.",
            code="invalid_json",
        )
    try:  # "\ud800" escapes decode to lone surrogates, which no tokenizer can encode
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError as e:
        raise bad_request(
            f"The request body holds text that is not valid Unicode: {e.reason} at {e.start}.",
            code="invalid_json",
        ) from None
    if _depth(body) > _MAX_DEPTH:
        raise bad_request(
            f"The request body nests more than {_MAX_DEPTH} levels.", code="invalid_json"
        )
    return body


def _depth(value: Any) -> int:
    depth, frontier = 0, [value]
    while frontier and depth <= _MAX_DEPTH:
        depth += 1
        nxt: list[Any] = []
        for v in frontier:
            if isinstance(v, dict):
                nxt.extend(v.values())
            elif isinstance(v, list):
                nxt.extend(v)
        frontier = nxt
    return depth if not frontier else depth + 1


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array"}.get(
        type(value), "object"
    )


def _expect(name: str, value: Any, expected: str) -> APIError:
    shown = json.dumps(value)[:80] if not isinstance(value, (dict, list)) else _type_name(value)
    return bad_request(f"'{name}' must be {expected}, got {shown}.", param=name)


def _int(body: Mapping[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise _expect(name, value, "an integer")
    if not lo <= value <= hi:
        raise bad_request(f"'{name}' must be in [{lo}, {hi}], got {value}.", param=name)
    return value


def _number(body: Mapping[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _expect(name, value, "a number")
    if not math.isfinite(float(value)):
        raise _expect(name, value, "a finite number")
    return float(value)


def _bool(body: Mapping[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _expect(name, value, "true or false")
    return value


def _stop(body: Mapping[str, Any]) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(s, str) for s in value):
        return tuple(value)
    raise _expect("stop", value, "a string or an array of strings")


def _model(body: Mapping[str, Any]) -> str | None:
    value = body.get("model")
    if value is not None and not isinstance(value, str):
        raise _expect("model", value, "a string")
    return value


def _refuse_unsupported(body: Mapping[str, Any]) -> None:
    """Fields whose meaning bitnet cannot honour: refused rather than silently ignored."""
    if body.get("tools") not in (None, []) or body.get("functions") not in (None, []):
        name = "tools" if body.get("tools") not in (None, []) else "functions"
        raise bad_request("Tool calling is not supported by this server.", param=name)
    if body.get("tool_choice") not in (None, "none", "auto"):
        raise bad_request("Tool calling is not supported by this server.", param="tool_choice")
    if body.get("logit_bias") not in (None, {}):
        raise bad_request("'logit_bias' is not supported by this server.", param="logit_bias")
    best_of = body.get("best_of")
    if best_of is not None and best_of != body.get("n", 1):
        raise bad_request("'best_of' is not supported (only best_of == n).", param="best_of")


def _json_schema(body: Mapping[str, Any], names: dict[str, str]) -> Any:
    """The schema of ``response_format`` (or llama-server's top-level ``json_schema``)."""
    fmt = body.get("response_format")
    top = body.get("json_schema")
    if top is not None:
        names["json_schema"] = "json_schema"
        if not isinstance(top, dict):
            raise _expect("json_schema", top, "a JSON schema object")
        if fmt is not None:
            raise bad_request(
                "Give either 'response_format' or 'json_schema', not both.", param="json_schema"
            )
        return top
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise _expect("response_format", fmt, "an object with a 'type'")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return fmt.get("schema") or True  # llama-cpp-python's optional schema
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict):
            raise bad_request(
                "'response_format.json_schema' must be an object with a 'schema'.",
                param="response_format",
            )
        schema = spec.get("schema", {"type": "object"})
        if not isinstance(schema, dict):
            raise bad_request(
                "'response_format.json_schema.schema' must be a JSON schema object.",
                param="response_format",
            )
        return schema
    raise bad_request(
        f"'response_format.type' must be 'text', 'json_object' or 'json_schema', got "
        f"{json.dumps(kind)[:40]}.",
        param="response_format",
    )


def _sampling(
    body: Mapping[str, Any],
    names: dict[str, str],
    *,
    max_tokens_field: str,
    logprobs: bool,
    top_logprobs: int,
) -> SamplingParams:
    seed = _int(body, "seed", -(1 << 63), (1 << 64) - 1)
    if seed is not None and seed < 0:
        if seed != -1:
            raise bad_request(f"'seed' must be >= 0 (or -1: random), got {seed}.", param="seed")
        seed = None
    max_tokens = _int(body, max_tokens_field, 0, _UNLIMITED)
    names["max_tokens"] = max_tokens_field
    options: dict[str, Any] = {
        "max_tokens": _UNLIMITED if max_tokens is None else max_tokens,
        "temperature": 1.0,
        "top_k": 0,
        "top_p": 1.0,
        "min_p": 0.0,
        "seed": seed,
        "stop": _stop(body),
        "logprobs": logprobs,
        "top_logprobs": top_logprobs,
        "json_schema": _json_schema(body, names),
    }
    for name in ("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty"):
        value = _number(body, name)
        if value is not None:
            options[name] = value
    repeat_penalty = _number(body, "repeat_penalty")
    if repeat_penalty is not None:
        options["repeat_penalty"] = repeat_penalty
    for name in ("top_k", "repeat_last_n"):
        value = _int(body, name, 0, 1 << 31)
        if value is not None:
            options[name] = value
    ignore_eos = _bool(body, "ignore_eos")
    if ignore_eos is not None:
        options["ignore_eos"] = ignore_eos
    try:
        return SamplingParams(**options)
    except ParameterError as e:
        raise bad_request(str(e), param=names.get(e.param, e.param)) from None


def _n(body: Mapping[str, Any]) -> int:
    n = _int(body, "n", 1, MAX_N)
    return 1 if n is None else n


def _stream(body: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = bool(_bool(body, "stream"))
    options = body.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise _expect("stream_options", options, "an object")
        include_usage = bool(_bool(options, "include_usage"))
    return stream, include_usage


def _content(i: int, message: Mapping[str, Any]) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts: list[str] = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text":
                kind = part.get("type") if isinstance(part, dict) else _type_name(part)
                raise bad_request(
                    f"messages[{i}].content[{j}] has type {json.dumps(kind)[:40]}; only 'text' "
                    "parts are supported.",
                    param=f"messages[{i}].content",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise _expect(f"messages[{i}].content[{j}].text", text, "a string")
            parts.append(text)
        return "\n".join(parts)
    raise _expect(f"messages[{i}].content", content, "a string or an array of text parts")


def _messages(body: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    messages = body.get("messages")
    if messages is None:
        raise bad_request(
            "'messages' is required.", param="messages", code="missing_required_parameter"
        )
    if not isinstance(messages, list) or not messages:
        raise _expect("messages", messages, "a non-empty array of messages")
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise _expect(f"messages[{i}]", m, "an object with 'role' and 'content'")
        role = m.get("role")
        if role not in _ROLES:
            raise bad_request(
                f"messages[{i}].role must be one of {', '.join(_ROLES)}, got "
                f"{json.dumps(role)[:40]}.",
                param=f"messages[{i}].role",
            )
        message: dict[str, Any] = {
            "role": "system" if role == "developer" else role,
            "content": _content(i, m),
        }
        name = m.get("name")
        if isinstance(name, str):
            message["name"] = name
        out.append(message)
    return tuple(out)


def parse_chat(body: Mapping[str, Any]) -> ParsedRequest:
    """A /v1/chat/completions body, checked.

    Raises:
        APIError: 400 naming the first field that is missing, of the wrong type or out of
            range.
    """
    _refuse_unsupported(body)
    names: dict[str, str] = {"json_schema": "response_format"}
    messages = _messages(body)
    logprobs = bool(_bool(body, "logprobs"))
    top = _int(body, "top_logprobs", 0, MAX_TOP_LOGPROBS) or 0
    if top and not logprobs:
        raise bad_request("'top_logprobs' needs 'logprobs': true.", param="top_logprobs")
    field = (
        "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    )
    params = _sampling(body, names, max_tokens_field=field, logprobs=logprobs, top_logprobs=top)
    stream, include_usage = _stream(body)
    return ParsedRequest(
        endpoint="chat",
        model=_model(body),
        prompts=(),
        messages=messages,
        params=params,
        n=_n(body),
        stream=stream,
        include_usage=include_usage,
        completion_logprobs=None,
        echo=False,
        param_names=names,
    )


def _prompts(body: Mapping[str, Any]) -> tuple[str | tuple[int, ...], ...]:
    prompt = body.get("prompt")
    if prompt is None:
        raise bad_request(
            "'prompt' is required.", param="prompt", code="missing_required_parameter"
        )
    if isinstance(prompt, str):
        return (prompt,)

    def is_ids(v: Any) -> bool:
        return (
            isinstance(v, list)
            and bool(v)
            and all(isinstance(t, int) and not isinstance(t, bool) for t in v)
        )

    if isinstance(prompt, list) and prompt:
        if all(isinstance(p, str) for p in prompt):
            return tuple(prompt)
        if is_ids(prompt):
            return (tuple(prompt),)
        if all(is_ids(p) for p in prompt):
            return tuple(tuple(p) for p in prompt)
    raise _expect(
        "prompt",
        prompt,
        "a string, an array of strings, an array of token ids or an array of arrays of token "
        "ids (none empty)",
    )


def parse_completion(body: Mapping[str, Any]) -> ParsedRequest:
    """A /v1/completions body, checked.

    Raises:
        APIError: 400 naming the first field that is missing, of the wrong type or out of
            range.
    """
    _refuse_unsupported(body)
    if body.get("suffix") not in (None, ""):
        raise bad_request("'suffix' is not supported by this server.", param="suffix")
    names: dict[str, str] = {"json_schema": "response_format", "top_logprobs": "logprobs"}
    prompts = _prompts(body)
    legacy = _int(body, "logprobs", 0, MAX_TOP_LOGPROBS)
    echo = bool(_bool(body, "echo"))
    if echo and legacy is not None:
        raise bad_request(
            "'echo' with 'logprobs' is not supported (prompt log-probabilities are not computed).",
            param="echo",
        )
    params = _sampling(
        body,
        names,
        max_tokens_field="max_tokens",
        logprobs=legacy is not None,
        top_logprobs=legacy or 0,
    )
    n = _n(body)
    if len(prompts) * n > MAX_N:
        raise bad_request(
            f"At most {MAX_N} choices per request: {len(prompts)} prompts x n={n}.", param="n"
        )
    stream, include_usage = _stream(body)
    return ParsedRequest(
        endpoint="completions",
        model=_model(body),
        prompts=prompts,
        messages=(),
        params=params,
        n=n,
        stream=stream,
        include_usage=include_usage,
        completion_logprobs=legacy,
        echo=echo,
        param_names=names,
    )
