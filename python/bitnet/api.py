"""One-call generation: ``bitnet.generate(prompt, model=...)``."""

from __future__ import annotations

import importlib
import os
import threading
from collections.abc import Sequence
from pathlib import Path

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
    prompt: str,
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
    seed: int | None = None,
    stop: Sequence[str] = (),
) -> str:
    """Continues a prompt with a model, loading it on first use.

    Args:
        prompt: The text to continue.
        model: A loaded :class:`Model`, a .gguf path, a hub repository ("owner/repo") or a
            registry name ("bitnet-2b4t"); None uses the model bundled with the package. A
            model named by path or name is loaded once and kept for the next call.
        revision: Hub branch, tag or commit, when model is a hub name.
        max_tokens: See :meth:`Model.generate` for this and every sampling option.
        temperature: See :meth:`Model.generate`.
        top_k: See :meth:`Model.generate`.
        top_p: See :meth:`Model.generate`.
        min_p: See :meth:`Model.generate`.
        repeat_penalty: See :meth:`Model.generate`.
        repeat_last_n: See :meth:`Model.generate`.
        seed: See :meth:`Model.generate`.
        stop: See :meth:`Model.generate`.

    Returns:
        The generated text.

    Raises:
        BitnetError: No model was named and none is bundled, or it cannot be loaded.

    Example:
        >>> import bitnet
        >>> bitnet.generate("The capital of France is", model="bitnet-2b4t-gguf")  # doctest: +SKIP
        ' Paris.'
    """
    return _model(model, revision).generate(
        prompt,
        max_tokens=max_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repeat_penalty=repeat_penalty,
        repeat_last_n=repeat_last_n,
        seed=seed,
        stop=stop,
    )
