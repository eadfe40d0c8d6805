"""bitnet: fast CPU inference for ternary (1.58-bit) and binary BitNet language models.

Example:
    >>> import bitnet
    >>> model = bitnet.load("microsoft/bitnet-b1.58-2B-4T-gguf")  # doctest: +SKIP
    >>> model.generate("The capital of France is", max_tokens=16)  # doctest: +SKIP
    >>> for piece in model.chat_stream([{"role": "user", "content": "Hi!"}]):  # doctest: +SKIP
    ...     print(piece, end="", flush=True)
    >>> bitnet.generate("Once upon a time", model="2b4t.gguf", seed=1)  # doctest: +SKIP
"""

from __future__ import annotations

from ._core import cpu_info as _cpu_info
from .api import generate
from .chat import TemplateError
from .convert import convert
from .engine import Chunk, Completion, RequestHandle, SamplingParams
from .errors import (
    BitnetError,
    ContextLengthError,
    FormatError,
    ParameterError,
    QueueFullError,
    ShapeError,
    UnsupportedError,
)
from .hub import HubError
from .model import Model, load
from .tokenizer import Tokenizer

__version__ = "0.1.0"


def cpu_info() -> dict[str, object]:
    """What this CPU supports and which kernels bitnet chose for it.

    Returns:
        A dict with ``brand`` (the CPU's name), ``features`` (e.g. ``"x86_64 avx2 fma f16c"``),
        ``isa`` (the kernels in use: ``ref``, ``avx2``, ``avx512``, ``avx512vnni``, ``avx512vbmi``,
        ``neon``, ``dotprod`` or ``i8mm``; lowered with the
        environment variable ``BITNET_ISA``), ``available_isas`` and ``hardware_threads``.

    Example:
        >>> bitnet.cpu_info()["isa"]  # doctest: +SKIP
        'avx2'
    """
    return dict(_cpu_info())


__all__ = [
    "BitnetError",
    "Chunk",
    "Completion",
    "ContextLengthError",
    "FormatError",
    "HubError",
    "Model",
    "ParameterError",
    "QueueFullError",
    "RequestHandle",
    "SamplingParams",
    "ShapeError",
    "TemplateError",
    "Tokenizer",
    "UnsupportedError",
    "__version__",
    "convert",
    "cpu_info",
    "generate",
    "load",
]
