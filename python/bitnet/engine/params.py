"""SamplingParams: the options of one generation request, validated once, shared everywhere.

The Python API (``Model.generate`` and friends), the command line and the server all build one
of these; the engine reads nothing else. Every option is checked for type and range when the
object is made, so a bad value fails at the call that passed it, with a
:class:`~bitnet.errors.ParameterError` naming the option, the expected and the found value.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import ParameterError

__all__ = ["MAX_TOP_LOGPROBS", "SamplingParams"]

MAX_TOP_LOGPROBS = 20  # as OpenAI's API
_MAX_WINDOW = 1 << 24  # repeat_last_n above the largest context we accept means "everything"
_MAX_STOP = 64  # stop strings per request
_MAX_STOP_CHARS = 1024  # characters per stop string


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    # bool is an int subclass, but True as a token count is a caller's mistake.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(name, f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ParameterError(name, f"{name} must be in [{lo}, {hi}], got {value}")
    return int(value)


def _float(name: str, value: Any, lo: float, hi: float, *, lo_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ParameterError(name, f"{name} must be a number, got {value!r}")
    v = float(value)
    low_ok = v > lo if lo_open else v >= lo
    if not (math.isfinite(v) and low_ok and v <= hi):
        interval = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
        raise ParameterError(name, f"{name} must be a finite number in {interval}, got {value!r}")
    return v


def _stop(value: Any) -> tuple[str, ...]:
    """One string, or any iterable of strings (consumed once, here), as a tuple."""
    if value is None:
        return ()
    items: list[Any] = [value] if isinstance(value, str) else _materialize("stop", value)
    if len(items) > _MAX_STOP:
        raise ParameterError("stop", f"stop takes at most {_MAX_STOP} strings, got {len(items)}")
    for s in items:
        if not isinstance(s, str):
            raise ParameterError("stop", f"stop must hold strings, got {s!r}")
        if len(s) > _MAX_STOP_CHARS:
            raise ParameterError(
                "stop", f"a stop string may have at most {_MAX_STOP_CHARS} characters, got {len(s)}"
            )
    return tuple(s for s in items if s)


def _materialize(name: str, value: Any) -> list[Any]:
    if isinstance(value, (bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        raise ParameterError(name, f"{name} must be a string or a list of strings, got {value!r}")
    return list(value)


def _json_schema(value: Any) -> str | None:
    """A JSON schema as compact JSON text (key order kept); True means any JSON object."""
    if value is None or value is False:
        return None
    if value is True:
        return '{"type":"object"}'
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except ValueError as e:
            raise ParameterError("json_schema", f"json_schema is not valid JSON: {e}") from None
    else:
        parsed = value
    if not isinstance(parsed, Mapping):
        raise ParameterError(
            "json_schema",
            f"json_schema must be a JSON object (a dict), got {type(parsed).__name__}",
        )
    try:
        # Key order is kept: structured output writes an object's properties in schema order.
        return json.dumps(parsed, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError, RecursionError) as e:
        raise ParameterError("json_schema", f"json_schema cannot be written as JSON: {e}") from None


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens, when to stop, what to report. Immutable and validated.

    Sampling runs in the order of Hugging Face's logits processors: repetition, presence and
    frequency penalties, temperature, top-k, top-p, min-p, then a seeded draw. The same seed,
    prompt and options give the same tokens whether the request runs alone or batched with
    others.

    Attributes:
        max_tokens: Most tokens to generate (0: none, only the prompt is processed).
        temperature: Divides the logits; 0 is greedy (the likeliest token, ties to the lowest
            id).
        top_k: Keep the k likeliest tokens (0: all).
        top_p: Keep the likeliest tokens whose probabilities add up to top_p (1: all).
        min_p: Drop tokens less likely than min_p times the likeliest (0: none).
        repeat_penalty: llama.cpp's/Hugging Face's repetition penalty for the tokens among the
            last repeat_last_n (1: none): a positive logit is divided by it, a negative one
            multiplied.
        repeat_last_n: How many recent tokens (prompt included) the penalties look at; values
            above the context mean the whole context.
        presence_penalty: OpenAI's: subtracted once from the logit of every token already
            generated (-2 to 2; 0: none).
        frequency_penalty: OpenAI's: subtracted from a token's logit once per time it was
            generated (-2 to 2; 0: none).
        seed: Seed of the random draw; None draws a fresh one per request.
        stop: Strings that end generation (not included in the text), even across tokens. A
            single string or any iterable of strings.
        ignore_eos: Keep generating past end-of-sequence tokens (benchmarks).
        logprobs: Report the log-probability of each generated token.
        top_logprobs: Also report this many likeliest alternatives per token (0 to 20; needs
            logprobs).
        json_schema: Constrain the output to JSON matching this schema (a dict or JSON text);
            True: any JSON object. Stored as compact JSON text, key order kept (objects are
            written with their properties in schema order).
    """

    max_tokens: int = 256
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = 64
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = field(default=())
    ignore_eos: bool = False
    logprobs: bool = False
    top_logprobs: int = 0
    json_schema: str | None = None

    def __post_init__(self) -> None:
        put = object.__setattr__  # frozen: normalized values are written once, here
        put(self, "max_tokens", _int("max_tokens", self.max_tokens, 0, 1 << 30))
        put(self, "temperature", _float("temperature", self.temperature, 0.0, 1e4))
        put(self, "top_k", _int("top_k", self.top_k, 0, 1 << 31))
        put(self, "top_p", _float("top_p", self.top_p, 0.0, 1.0, lo_open=True))
        put(self, "min_p", _float("min_p", self.min_p, 0.0, 1.0))
        put(
            self,
            "repeat_penalty",
            _float("repeat_penalty", self.repeat_penalty, 0.0, 1e4, lo_open=True),
        )
        window = _int("repeat_last_n", self.repeat_last_n, 0, 1 << 62)
        put(self, "repeat_last_n", min(window, _MAX_WINDOW))
        put(self, "presence_penalty", _float("presence_penalty", self.presence_penalty, -2, 2))
        put(self, "frequency_penalty", _float("frequency_penalty", self.frequency_penalty, -2, 2))
        if self.seed is not None:
            put(self, "seed", _int("seed", self.seed, 0, (1 << 64) - 1))
        put(self, "stop", _stop(self.stop))
        for name in ("ignore_eos", "logprobs"):
            if not isinstance(getattr(self, name), bool):
                raise ParameterError(
                    name, f"{name} must be True or False, got {getattr(self, name)!r}"
                )
        put(self, "top_logprobs", _int("top_logprobs", self.top_logprobs, 0, MAX_TOP_LOGPROBS))
        if self.top_logprobs and not self.logprobs:
            put(self, "logprobs", True)  # asking for alternatives implies the chosen token's
        put(self, "json_schema", _json_schema(self.json_schema))

    @property
    def greedy(self) -> bool:
        """Whether sampling always takes the likeliest token."""
        return self.temperature == 0.0

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> SamplingParams:
        """SamplingParams from keyword options, naming an unknown one in the error.

        Raises:
            ParameterError: An unknown option, or a value of the wrong type or range.
        """
        known = cls.__dataclass_fields__
        for name in kwargs:
            if name not in known:
                raise ParameterError(
                    name, f"unknown option {name!r}; the options are {', '.join(sorted(known))}"
                )
        return cls(**kwargs)
