"""The generation engine: one request type, one result type, continuous batching.

Every generation in bitnet (``Model.generate``/``stream``/``chat``/``complete``, the command
line, the server) is a request with :class:`SamplingParams`, answered with :class:`Chunk` objects
while it runs and a :class:`Completion` when it ends.
"""

from __future__ import annotations

from .params import MAX_TOP_LOGPROBS, SamplingParams
from .results import Chunk, Completion, FinishReason, Timings, TokenLogprob, TopLogprob

__all__ = [
    "MAX_TOP_LOGPROBS",
    "Chunk",
    "Completion",
    "FinishReason",
    "SamplingParams",
    "Timings",
    "TokenLogprob",
    "TopLogprob",
]
