"""One-call generation: ``bitnet.generate(prompt, model=...)``."""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

from .completions import JsonSchema, Prompt, sampling_params
from .errors import BitnetError
from .model import Model, load

__all__ = ["default_model_path", "generate"]

_lock = threading.Lock()
_loaded: tuple[tuple[str, str | None], Model] | None = None


def default_model_path() -> Path:
    """The small model bundled with the package, used when no model is named.

    Raises:
        BitnetError: This build ships no bundled model.
    """
    missing = BitnetError(
        "this build of bitnet has no bundled default model; name one with model=... "
        "(a .gguf file, 'owner/repo' on the Hugging Face hub, or a name from `bitnet models`)"
    )
    try:
        module = importlib.import_module("bitnet.default_model")
        path = module.default_model_path()
    except (ImportError, OSError, BitnetError) as e:
        raise missing from e
    if path is None or not Path(path).is_file():
        raise missing
    return Path(path)


def _model(model: Model | str | os.PathLike[str] | None, revision: str | None) -> Model:
    """The Model for a generate() call: as given, or loaded once and kept for later calls."""
    global _loaded
    if isinstance(model, Model):
        return model
    name = os.fspath(model) if model is not None else os.fspath(default_model_path())
    key = (name, revision)
    with _lock:
        if _loaded is None or _loaded[0] != key:
            _loaded = (key, load(name, revision=revision))
        return _loaded[1]


def generate(
    prompt: Prompt,
    *,
    model: Model | str | os.PathLike[str] | None = None,
    revision: str | None = None,
    max_tokens: int = 256,
    temperature: float = 0.8,
    top_k: int = 40,
    top_p: float = 0.95,
    min_p: float = 0.05,
    repeat_penalty: float = 1.0,
    repeat_last_n: int = 64,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    seed: int | None = None,
    stop: str | Sequence[str] | None = (),
    ignore_eos: bool = False,
    logprobs: bool = False,
    top_logprobs: int = 0,
    json_schema: JsonSchema = None,
) -> str:
    """Continues a prompt with a model, loading it on first use.

    Args:
        prompt: The text to continue (special-token text is read as special tokens; the BOS
            token is added when the model asks for it), or token ids.
        model: A loaded :class:`Model`, a .gguf path, a hub repository ("owner/repo") or a
            registry name ("bitnet-2b4t"); None uses the model bundled with the package. A
            model named by path or name is loaded once and kept for the next call.
        revision: Hub branch, tag or commit, when model is a hub name.
        max_tokens: Most tokens to generate (0: only process the prompt).
        temperature: Divides the logits; 0 means greedy (always the likeliest token).
        top_k: Sample among the k likeliest tokens (0: all).
        top_p: Sample among the likeliest tokens whose probabilities add up to top_p (1: all).
        min_p: Drop tokens less likely than min_p times the likeliest one (0: none).
        repeat_penalty: Penalty for tokens among the last repeat_last_n (1: none): a positive
            logit is divided by it, a negative one multiplied.
        repeat_last_n: How many recent tokens (prompt included) the repeat penalty looks at.
        presence_penalty: OpenAI's: subtracted once from the logit of every token generated so
            far (-2 to 2).
        frequency_penalty: OpenAI's: subtracted from a token's logit once per time it was
            generated so far (-2 to 2).
        seed: Seed of the random draw: the same seed gives the same text. None draws a fresh
            one.
        stop: A string or strings that end generation (not included), even across tokens.
        ignore_eos: Keep going past end-of-sequence tokens (for benchmarks).
        logprobs: Compute log-probabilities (use :meth:`Model.complete` to read them).
        top_logprobs: Also the likeliest alternatives per token (0 to 20).
        json_schema: Constrain the output to JSON matching this schema (a dict or JSON text;
            True: any JSON object).

    Returns:
        The generated text.

    Raises:
        BitnetError: No model was named and none is bundled, or it cannot be loaded.
        ParameterError: An option is out of range or of the wrong type (names it).
        ContextLengthError: The prompt is longer than the model's context.

    Example:
        >>> import bitnet
        >>> bitnet.generate("The capital of France is", model="bitnet-2b4t-gguf")  # doctest: +SKIP
        ' Paris.'
    """
    params = sampling_params(locals())
    m = _model(model, revision)
    return m._submit_params(prompt, params).result().text
