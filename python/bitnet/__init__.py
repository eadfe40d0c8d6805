"""bitnet: fast CPU inference for ternary (1.58-bit) and binary BitNet language models.

Example:
    >>> import bitnet
    >>> bitnet.convert("bitnet-b1.58-2B-4T/", "2b4t.gguf")  # doctest: +SKIP
    >>> model = bitnet.load("2b4t.gguf")  # doctest: +SKIP
    >>> model.generate("The capital of France is", max_tokens=16)  # doctest: +SKIP
"""

from __future__ import annotations

from .convert import convert
from .errors import BitnetError, FormatError, ShapeError, UnsupportedError
from .model import Model, load

__version__ = "0.1.0"

__all__ = [
    "BitnetError",
    "FormatError",
    "Model",
    "ShapeError",
    "UnsupportedError",
    "__version__",
    "convert",
    "load",
]
