"""TextStream: generated token bytes in, text that is safe to show out.

Used by the engine for every request, so streamed pieces, the final text and stop strings agree
everywhere (Python API, command line, server).
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

__all__ = ["TextStream"]


class TextStream:
    """Turns generated token bytes into text pieces that are safe to show.

    * Only complete UTF-8 characters come out: a character split across tokens is held back
      until its last byte arrives (invalid bytes become U+FFFD, never a broken string).
    * Text that might be the start of a stop string is held back until it is clear; a stop
      string ends the stream and is never emitted, even when it spans several tokens.
      ``stop_sequence`` then tells which one matched (the earliest in the text; of two starting
      at the same place, the first listed).

    Example:
        >>> s = TextStream(stop=("END",))
        >>> s.push(b"caf\\xc3"), s.push(b"\\xa9 E"), s.push(b"ND more"), s.stopped
        ('caf', 'é ', '', True)
    """

    def __init__(self, stop: Sequence[str] = (), *, strip_leading_space: bool = False) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._pending = ""
        self._strip = strip_leading_space
        self.stopped = False
        self.stop_sequence: str | None = None

    def push(self, data: bytes) -> str:
        """Adds bytes; returns the text that can be shown now (possibly empty)."""
        if self.stopped:
            return ""
        return self._release(self._decoder.decode(data))

    def flush(self) -> str:
        """Ends the stream; returns what was held back (minus any stop string)."""
        if self.stopped:
            return ""
        text = self._release(self._decoder.decode(b"", final=True))
        rest, self._pending = self._pending, ""
        return text + rest

    def _release(self, text: str) -> str:
        if self._strip and text:
            text = text.removeprefix(" ")
            self._strip = not text  # strip only the very first character of the output
        pending = self._pending + text
        found = [(i, k) for k, i in enumerate(pending.find(s) for s in self._stop) if i >= 0]
        if found:
            cut, k = min(found)
            self.stopped = True
            self.stop_sequence = self._stop[k]
            self._pending = ""
            return pending[:cut]
        hold = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(pending)), hold, -1):
                if pending.endswith(s[:n]):
                    hold = n
                    break
        self._pending = pending[len(pending) - hold :]
        return pending[: len(pending) - hold]
