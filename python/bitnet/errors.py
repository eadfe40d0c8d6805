"""Exceptions raised by bitnet, from Python code and from the C++ core alike.

Every error a user can cause (a corrupt file, an unsupported checkpoint, a bad argument) is one of
these, with a message that names the file, tensor or key and what was expected.
"""

from __future__ import annotations

__all__ = ["BitnetError", "FormatError", "ShapeError", "UnsupportedError"]


class BitnetError(Exception):
    """Base class of all bitnet errors."""


class FormatError(BitnetError, ValueError):
    """A model file or checkpoint is malformed: truncated, corrupt, missing keys or tensors."""


class ShapeError(BitnetError, ValueError):
    """An argument has the wrong shape or is out of range (token ids, context length)."""


class UnsupportedError(BitnetError, ValueError):
    """A well-formed input asks for something bitnet does not implement."""
