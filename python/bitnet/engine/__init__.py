"""The generation engine: one request type, one result type, continuous batching.

Every generation in bitnet (``Model.generate``/``stream``/``chat``/``complete``, the command
line, the server) is a request with :class:`SamplingParams` submitted to an :class:`Engine`,
answered with :class:`Chunk` objects while it runs and a :class:`Completion` when it ends.

Layers (docs/architecture.md): the C++ batched decoder and paged KV cache run one step over
many sequences; :mod:`~bitnet.engine.kv_blocks` and :mod:`~bitnet.engine.scheduler` decide what
goes into each step; :mod:`~bitnet.engine.engine` owns the thread that runs the steps, samples
and streams results into each request's :class:`RequestHandle`.
"""

from __future__ import annotations

from .engine import Engine, EngineStats, TokenConstraint
from .handle import RequestHandle
from .params import MAX_TOP_LOGPROBS, SamplingParams
from .results import Chunk, Completion, FinishReason, Timings, TokenLogprob, TopLogprob
from .text import TextStream

__all__ = [
    "MAX_TOP_LOGPROBS",
    "Chunk",
    "Completion",
    "Engine",
    "EngineStats",
    "FinishReason",
    "RequestHandle",
    "SamplingParams",
    "TextStream",
    "Timings",
    "TokenConstraint",
    "TokenLogprob",
    "TopLogprob",
]
