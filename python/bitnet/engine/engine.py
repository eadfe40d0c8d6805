"""Engine: one thread that owns the batched decoder and the KV cache and runs steps.

Who owns what (docs/architecture.md):

* The **engine thread** owns the C++ ``KvCache`` and ``BatchDecoder``, the per-request samplers,
  text streams and constraints while requests run, and is the only thread that calls
  ``BatchDecoder.step`` and the samplers (both release the GIL while they compute).
* The **scheduler** (pure policy, :mod:`bitnet.engine.scheduler`) and its block manager are
  shared state under the engine's lock: callers add and cancel requests, the engine thread
  schedules, completes and finishes them.
* **Callers** (any thread, or asyncio) tokenize, validate and compile constraints in
  :meth:`Engine.submit` before anything reaches the engine, then read their
  :class:`~bitnet.engine.handle.RequestHandle`.

One step: drop cancelled requests; schedule (decodes first, then prompt chunks, at most n_batch
tokens); fill the constraint masks of the sequences that will sample; run the decoder over every
scheduled sequence at once (one read of the weights); sample one token for every sequence whose
chunk reached its end, all rows in one C++ call on a thread pool; apply EOS, stop strings,
max_tokens, the context limit and the constraint; push one chunk per token to each handle.

Exact top-k (a model loaded with ``exact_topk=True``): a request whose draw reads only its
top_k largest logits asks the decoder for just those (:meth:`Engine._topk_spec` says when):
greedy requests k = 1, top_k > 0 requests k = top_k; the tokens its penalties change are passed
as forced (computed exactly) and its constraint's mask as the allowed set. The decoder returns
their exact q8_0 values and -inf elsewhere, and the sampler's draw depends only on those
values (model/sampler.h), so the tokens are identical to the full output layer's.

Failures: an exception while handling one request on the engine thread (making its sampler,
its constraint, its draw, its text) fails that request alone: its handle raises a BitnetError
naming it, its slot and blocks are freed, and the others go on. An exception of the step itself
(the decoder) stops the engine and fails every request.

Determinism: each request has its own seeded sampler, and the decoder's logits for a sequence
do not depend on the rest of the batch, on how its prompt was chunked, on prefix-cache hits or
on preemption. So a seeded request gives the same tokens alone or among any others.
"""

from __future__ import annotations

import atexit
import itertools
import secrets
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .. import _core
from ..errors import BitnetError, ParameterError, QueueFullError, UnsupportedError
from ..tokenizer import check_text
from .handle import RequestHandle
from .kv_blocks import BlockManager
from .params import SamplingParams
from .results import Chunk, Completion, FinishReason, Timings, TokenLogprob, TopLogprob
from .scheduler import PrefillPolicy, Scheduler, SeqStatus, SequenceState, StepCost, StepPlan
from .text import TextStream

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["Engine", "EngineStats", "TokenConstraint"]

KV_TYPES = ("f16", "q8_0", "f32")
# Exact top-k is used up to top_k = n_vocab / _TOPK_MAX_FRACTION (beyond, most rows would be
# recomputed exactly anyway, and the pre-pass would only add bytes).
_TOPK_MAX_FRACTION = 8


class TokenConstraint(Protocol):
    """A structured-output matcher (see bitnet.engine.constraint.make_constraint)."""

    def fill_mask(self, allowed: np.ndarray) -> None: ...  # bool (n_vocab,): True = allowed
    def accept(self, token_id: int) -> None: ...
    def is_finished(self) -> bool: ...


@dataclass(frozen=True)
class EngineStats:
    """A snapshot of the engine's state and counters (for metrics).

    Token counts of the KV cache are in positions (blocks x block_tokens).
    """

    running: int  # requests admitted (processing the prompt or generating)
    waiting: int  # requests queued
    n_parallel: int
    max_queue: int
    kv_tokens_used: int  # positions in blocks that running requests hold
    kv_tokens_cached: int  # positions in prefix-cache blocks nobody holds (reusable, evictable)
    kv_tokens_total: int  # the KV budget
    kv_bytes_resident: int  # memory the cache has touched so far
    prefix_hit_tokens_total: int  # prompt tokens taken from the prefix cache
    prompt_tokens_total: int  # prompt tokens of admitted requests
    generated_tokens_total: int
    requests_total: int  # accepted by submit()
    requests_rejected_total: int  # refused with QueueFullError
    requests_finished: dict[str, int] = field(default_factory=dict)  # by finish reason
    requests_failed_total: int = 0  # ended by an error of their own (their handle raises)
    preemptions_total: int = 0
    steps_total: int = 0
    step_tokens_total: int = 0  # tokens computed by the decoder
    busy_s: float = 0.0  # time spent in steps
    topk_rows_total: int = 0  # sampled rows computed with the exact-top-k output layer
    topk_exact_rows_total: int = 0  # output rows it recomputed exactly for them
    alive: bool = True  # False once closed or failed


@dataclass(eq=False)
class _Request:
    """The engine thread's state of one request (SequenceState.payload)."""

    handle: RequestHandle
    params: SamplingParams
    seed: int  # drawn at submit when the caller gave none
    text: TextStream
    constraint: TokenConstraint | None
    eos: frozenset[int]
    n_prompt: int
    t_submit: float
    mask: np.ndarray | None = None
    sampler: _core.Sampler | None = None  # made at first admission (3 MB at 128k tokens)
    generated: list[int] = field(default_factory=list)
    parts: list[str] = field(default_factory=list)
    logprobs: list[TokenLogprob] = field(default_factory=list)
    t_scheduled: float | None = None
    t_first: float | None = None
    n_cached_tokens: int = 0
    finished: bool = False


_live_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # engine threads must not outlive the interpreter's shutdown
    for engine in list(_live_engines):
        engine.close()


class Engine:
    """Continuous batching over one model: many requests advanced together, step by step.

    Made by :attr:`bitnet.Model.engine` from the load options; most code uses the Model's
    methods, which submit here. See the module docstring for the threads and the step.

    Args:
        model: The loaded model (kept by weak reference: the engine does not keep it alive).
        n_ctx: Most tokens one sequence holds (prompt plus generated text).
        n_batch: Most tokens one step computes (decodes plus prompt chunks).
        n_threads: Threads of the decoder and the sampler (0: the default count).
        n_parallel: Most sequences running at once.
        kv_budget: KV positions across all sequences and the prefix cache (None:
            n_parallel * n_ctx). Memory is reserved, and touched only as it is used.
        max_queue: Most requests waiting; beyond it submit() raises QueueFullError.
        kv_cache: Type of the KV cache: "f16", "q8_0" or "f32".
        block_tokens: Positions per KV block (the prefix cache shares whole blocks).
        prefill: How prompt chunks share a step: "round_robin" or "fcfs" (scheduler docs).
        prefix_cache: Reuse the KV blocks of equal prompt prefixes.
        max_step_ms: While sequences are generating, prompt chunks are sized so that a step
            lasts about max(max_step_ms, 1.5 x a step of the decodes alone), from an online
            model of step time: on a CPU every prompt token in a step delays the tokens of
            everyone decoding in it. None: only n_batch limits a step.
        exact_topk: Ask the decoder for only the largest logits where a request's draw needs
            no more (module docstring). None: whenever the model has the pre-pass
            (``bitnet.load(..., exact_topk=True)``); True requires it; False never.

    Raises:
        ParameterError: An option out of range (names it).
        UnsupportedError: The KV type does not suit the model (q8_0 needs head_dim % 32 == 0),
            or exact_topk=True for a model loaded without the pre-pass.

    Thread safety: every public method may be called from any thread.
    """

    def __init__(
        self,
        model: Model,
        *,
        n_ctx: int,
        n_batch: int = 512,
        n_threads: int = 0,
        n_parallel: int = 4,
        kv_budget: int | None = None,
        max_queue: int = 64,
        kv_cache: str = "f16",
        block_tokens: int = 32,
        prefill: PrefillPolicy = "round_robin",
        prefix_cache: bool = True,
        max_step_ms: float | None = 250.0,
        exact_topk: bool | None = None,
    ) -> None:
        _check_int("n_ctx", n_ctx, 1)
        if max_step_ms is not None and not max_step_ms > 0:
            raise ParameterError("max_step_ms", f"max_step_ms must be > 0, got {max_step_ms}")
        _check_int("n_batch", n_batch, 1)
        _check_int("n_parallel", n_parallel, 1)
        _check_int("max_queue", max_queue, 0)
        _check_int("block_tokens", block_tokens, 1)
        if kv_budget is None:
            kv_budget = n_parallel * n_ctx
        _check_int("kv_budget", kv_budget, 1)
        if kv_cache not in KV_TYPES:
            raise ParameterError(
                "kv_cache", f"kv_cache must be one of {', '.join(KV_TYPES)}, got {kv_cache!r}"
            )
        has_topk = bool(getattr(model, "exact_topk", False))
        if exact_topk and not has_topk:
            raise UnsupportedError(
                "exact_topk=True needs a model loaded with bitnet.load(..., exact_topk=True)"
            )
        self.exact_topk = has_topk if exact_topk is None else bool(exact_topk)
        self._model = weakref.ref(model)
        self.n_vocab = model.n_vocab
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.kv_cache = kv_cache
        self.block_tokens = block_tokens
        n_blocks = -(-kv_budget // block_tokens)
        self._blocks = BlockManager(n_blocks, block_tokens, prefix_cache=prefix_cache)
        self._sched = Scheduler(
            self._blocks,
            n_ctx=n_ctx,
            n_batch=n_batch,
            n_parallel=n_parallel,
            max_queue=max_queue,
            prefill=prefill,
        )
        self._cache = _core.KvCache(
            model._core, kv_type=kv_cache, block_tokens=block_tokens, n_blocks=n_blocks
        )
        self._decoder = _core.BatchDecoder(
            model._core, self._cache, n_batch=n_batch, n_threads=n_threads
        )
        self.n_threads = int(getattr(self._decoder, "n_threads", n_threads) or 1)
        self._sampler = _core.BatchSampler(self.n_threads)
        tok = model.tokenizer
        self._bytes = tok.token_bytes  # the tokenizer's table: b"" for control tokens
        self._eos = frozenset(tok.eos_ids)

        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._closed = False  # no new requests
        self._stopping = False  # the loop exits once nothing is left
        self._error: BaseException | None = None
        self._ids = itertools.count(1)
        self._max_step_s = None if max_step_ms is None else max_step_ms / 1000
        self._cost = StepCost()
        self._service_s = 0.0  # moving average of admission-to-end times (Retry-After)
        self._counts: dict[str, Any] = {
            "generated": 0,
            "requests": 0,
            "rejected": 0,
            "steps": 0,
            "step_tokens": 0,
            "busy_s": 0.0,
            "failed": 0,
            "finished": {"stop": 0, "length": 0, "context": 0, "cancelled": 0},
        }
        self._thread = threading.Thread(target=self._loop, name="bitnet-engine", daemon=True)
        self._thread.start()
        _live_engines.add(self)

    # -- submitting ------------------------------------------------------------------------------
    def submit(
        self,
        prompt: str | Sequence[int],
        params: SamplingParams | None = None,
        request_id: str | None = None,
        *,
        strip_leading_space: bool = False,
    ) -> RequestHandle:
        """Queues a request; returns its handle at once (never waits for the queue).

        Args:
            prompt: Text (tokenized with the model's BOS rule, special-token text read as
                special tokens) or token ids.
            params: Sampling and stopping options (None: the defaults).
            request_id: An id for logs and results (None: "req-N").
            strip_leading_space: Drop one leading space from the text (SentencePiece chat
                replies).

        Raises:
            ContextLengthError: The prompt does not fit in n_ctx (gives both numbers).
            QueueFullError: max_queue requests are waiting (with a Retry-After estimate).
            ParameterError: A bad prompt or options.
            UnsupportedError: json_schema without structured-output support.
            BitnetError: The engine is closed or has failed.
        """
        if params is None:
            params = SamplingParams()
        elif not isinstance(params, SamplingParams):
            raise ParameterError(
                "params", f"params must be a SamplingParams, got {type(params).__name__}"
            )
        ids = self._prompt_ids(prompt)
        constraint = self._constraint(params) if params.json_schema is not None else None
        rid = request_id if request_id is not None else f"req-{next(self._ids)}"
        seq = SequenceState(request_id=rid, tokens=ids, n_prompt=len(ids))
        handle = RequestHandle(rid, len(ids), lambda _h: self._cancel(seq))
        seq.payload = _Request(
            handle=handle,
            params=params,
            seed=secrets.randbits(64) if params.seed is None else params.seed,
            text=TextStream(params.stop, strip_leading_space=strip_leading_space),
            constraint=constraint,
            eos=frozenset() if params.ignore_eos else self._eos,
            n_prompt=len(ids),
            t_submit=time.perf_counter(),
            mask=np.zeros(self.n_vocab, dtype=bool) if constraint is not None else None,
        )
        with self._lock:
            if self._error is not None:
                raise BitnetError(f"the engine has failed: {self._error}")
            if self._closed:
                raise BitnetError("the engine is closed; it accepts no new requests")
            try:
                self._sched.add(seq)
            except QueueFullError as e:
                self._counts["rejected"] += 1
                raise QueueFullError(str(e), retry_after_s=self._retry_after()) from None
            self._counts["requests"] += 1
            self._wake.notify()
        return handle

    def _prompt_ids(self, prompt: str | Sequence[int]) -> list[int]:
        if isinstance(prompt, str):
            model = self._model()
            if model is None:
                raise BitnetError("the model of this engine has been garbage-collected")
            ids = model.tokenize(check_text(prompt, "prompt"))
        else:
            if isinstance(prompt, (bytes, bytearray)):
                raise ParameterError("prompt", "prompt must be a str or token ids, not bytes")
            arr = np.asarray(prompt)
            if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
                raise ParameterError("prompt", "prompt must be a str or a 1-D sequence of ints")
            if arr.size and (arr.min() < 0 or arr.max() >= self.n_vocab):
                raise ParameterError(
                    "prompt",
                    f"token ids must be in [0, {self.n_vocab}), got "
                    f"{int(arr.min())}..{int(arr.max())}",
                )
            ids = [int(t) for t in arr]
        if not ids:
            raise ParameterError(
                "prompt", "the prompt is empty (no tokens, and the model adds no BOS token)"
            )
        return ids

    def _constraint(self, params: SamplingParams) -> TokenConstraint:
        try:
            from .constraint import make_constraint  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise UnsupportedError(
                "json_schema: structured output is not available in this build"
            ) from None
        model = self._model()
        if model is None:
            raise BitnetError("the model of this engine has been garbage-collected")
        assert params.json_schema is not None  # submit() calls this only when it is set
        constraint: TokenConstraint = make_constraint(model, params.json_schema)
        return constraint

    def _cancel(self, seq: SequenceState) -> None:
        with self._lock:
            self._sched.cancel(seq)
            self._wake.notify()

    def _retry_after(self) -> float:
        est = self._service_s / self._sched.n_parallel if self._service_s else 1.0
        return float(min(120.0, max(1.0, round(est, 1))))

    # -- state -----------------------------------------------------------------------------------
    def stats(self) -> EngineStats:
        """A snapshot of the queue, the KV cache and the counters."""
        topk_rows, topk_exact = getattr(self._decoder, "topk_counts", (0, 0))
        with self._lock:
            bm = self._blocks
            bt = bm.block_tokens
            c = self._counts
            return EngineStats(
                running=len(self._sched.running),
                waiting=len(self._sched.waiting),
                n_parallel=self._sched.n_parallel,
                max_queue=self._sched.max_queue,
                kv_tokens_used=bm.n_held * bt,
                kv_tokens_cached=bm.n_cached_free * bt,
                kv_tokens_total=bm.n_blocks * bt,
                kv_bytes_resident=int(getattr(self._cache, "resident_bytes", 0)),
                prefix_hit_tokens_total=self._sched.prefix_hit_tokens_total,
                prompt_tokens_total=self._sched.prompt_tokens_total,
                generated_tokens_total=c["generated"],
                requests_total=c["requests"],
                requests_rejected_total=c["rejected"],
                requests_finished=dict(c["finished"]),
                requests_failed_total=c["failed"],
                preemptions_total=self._sched.preemptions_total,
                steps_total=c["steps"],
                step_tokens_total=c["step_tokens"],
                busy_s=c["busy_s"],
                topk_rows_total=topk_rows,
                topk_exact_rows_total=topk_exact,
                alive=not self._closed and self._error is None,
            )

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self, drain_timeout_s: float | None = None) -> None:
        """Stops accepting requests and shuts the engine thread down. Idempotent.

        Args:
            drain_timeout_s: Let accepted requests (running and waiting) finish for up to this
                many seconds first; None or 0 cancels them at the next step. Cancelled requests
                end with finish_reason "cancelled".
        """
        with self._lock:
            self._closed = True
            if drain_timeout_s:
                deadline = time.monotonic() + drain_timeout_s
                while self._sched.has_work and self._error is None:
                    left = deadline - time.monotonic()
                    if left <= 0 or not self._thread.is_alive():
                        break
                    self._idle.wait(left)
            for seq in [*self._sched.running, *self._sched.waiting]:
                self._sched.cancel(seq)
            self._stopping = True
            self._wake.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join()
        _live_engines.discard(self)

    # -- the engine thread -----------------------------------------------------------------------
    def _loop(self) -> None:
        try:
            while True:
                with self._lock:
                    while not self._sched.has_work and not self._stopping:
                        self._idle.notify_all()
                        self._wake.wait()
                    if self._stopping and not self._sched.has_work:
                        self._idle.notify_all()
                        return
                    plan = self._sched.schedule(self._prefill_limit())
                if not plan.chunks and not plan.cancelled:
                    with self._lock:  # nothing can run now (should not happen): do not spin
                        self._wake.wait(0.01)
                    continue
                self._step(plan)
        except BaseException as e:  # noqa: BLE001 (every waiting caller gets the error)
            self._die(e)

    def _prefill_limit(self) -> int | None:
        """Prompt tokens the next step may add while others decode (see max_step_ms)."""
        if self._max_step_s is None:
            return None
        n_decode = len(self._sched.running)
        decode_only = self._cost.predict(n_decode)
        if decode_only is None:
            return None
        fits = self._cost.tokens_within(max(self._max_step_s, 1.5 * decode_only))
        return None if fits is None else fits - n_decode

    def _die(self, error: BaseException) -> None:
        failure = BitnetError(f"the engine stopped: {type(error).__name__}: {error}")
        failure.__cause__ = error
        with self._lock:
            self._error = failure
            self._closed = True
            seqs = [*self._sched.running, *self._sched.waiting]
            for seq in seqs:
                self._sched.finish(seq)
            self._idle.notify_all()
        for seq in seqs:
            req = _req(seq)
            req.handle._fail(failure)

    def _step(self, plan: StepPlan) -> None:
        now = time.perf_counter()
        for seq in plan.admitted:
            req = _req(seq)
            if req.t_scheduled is None:
                req.t_scheduled = now
                req.n_cached_tokens = seq.n_cached_tokens
                try:
                    req.sampler = self._make_sampler(req.params, req.seed, seq.tokens)
                except Exception as e:  # noqa: BLE001 (this request fails, the others go on)
                    self._fail(seq, e)
        for seq in plan.cancelled:
            self._guarded(seq, self._end, seq, "cancelled")
        inputs: list[tuple[Any, ...]] = []
        sampled: list[SequenceState] = []
        ended: list[tuple[SequenceState, FinishReason]] = []
        for c in plan.chunks:
            seq = c.seq
            req = _req(seq)
            if req.finished:
                continue  # failed above: its chunk is not computed
            want = False
            if c.reaches_end:
                if req.params.max_tokens <= 0:
                    ended.append((seq, "length"))  # the prompt is processed (and cached), no more
                elif len(seq.tokens) >= self.n_ctx:
                    ended.append((seq, "context"))  # a prompt of n_ctx tokens: no room for more
                else:
                    want = True
            item: tuple[Any, ...] = (
                np.asarray(seq.table.blocks, dtype=np.int32),
                c.start,
                np.asarray(seq.tokens[c.start : c.start + c.n], dtype=np.int32),
                1 if want else 0,
            )
            if want:
                try:
                    topk = self._prepare_draw(req)
                except Exception as e:  # noqa: BLE001
                    self._fail(seq, e)
                    continue
                if topk is not None:
                    item = (*item, topk)
                sampled.append(seq)
            inputs.append(item)
        t0 = time.perf_counter()
        logits = self._decoder.step(inputs) if inputs else None
        if inputs:
            self._cost.observe(plan.n_tokens, time.perf_counter() - t0)
        with self._lock:
            self._sched.complete(plan)  # skips the sequences that failed meanwhile
            self._counts["steps"] += 1 if inputs else 0
            self._counts["step_tokens"] += plan.n_tokens if inputs else 0
        for seq, reason in ended:
            self._guarded(seq, self._end, seq, reason)
        if sampled:
            assert logits is not None
            self._sample(sampled, logits)
        with self._lock:
            self._counts["busy_s"] += time.perf_counter() - t0

    def _make_sampler(self, p: SamplingParams, seed: int, prompt: list[int]) -> _core.Sampler:
        # The repetition window never needs to be longer than the context, and is unused
        # without a repetition penalty.
        window = min(p.repeat_last_n, self.n_ctx) if p.repeat_penalty != 1.0 else 0
        sampler = _core.Sampler(
            self.n_vocab,
            temperature=p.temperature,
            top_k=p.top_k,
            top_p=p.top_p,
            min_p=p.min_p,
            repeat_penalty=p.repeat_penalty,
            repeat_last_n=window,
            presence_penalty=p.presence_penalty,
            frequency_penalty=p.frequency_penalty,
            seed=seed,
        )
        for t in prompt[len(prompt) - window :] if window else ():
            sampler.accept(t, False)
        return sampler

    def _prepare_draw(self, req: _Request) -> int | tuple[int, Any, Any] | None:
        """Before the step that gives a request its next logits: fills its constraint's mask
        (the state it has now is the one the draw sees) and returns the decoder's ``topk``
        argument for it (None: the full output layer)."""
        mask = None
        if req.constraint is not None and req.mask is not None:
            req.mask[:] = False
            req.constraint.fill_mask(req.mask)
            mask = req.mask
        return self._topk_spec(req, mask)

    def _topk_spec(
        self, req: _Request, mask: np.ndarray | None
    ) -> int | tuple[int, Any, Any] | None:
        """The exact-top-k request for one draw, or None where the draw needs every logit.

        Safe exactly when the draw reads only the k largest logits (model/sampler.h): greedy
        (k = 1) or top_k > 0 (k = top_k; temperature, top-p and min-p then act within those
        k). The tokens the penalties change are forced (their exact logits are penalized and
        may move into the top k); the constraint's disallowed tokens are not eligible.
        Log-probabilities are normalized over the whole vocabulary, and sampling without
        top_k reads every logit: those use the full layer. So does a top_k above n_vocab / 8,
        where most rows would be recomputed anyway.
        """
        if not self.exact_topk:
            return None
        p = req.params
        if p.logprobs:
            return None
        if p.greedy:
            k = 1
        elif p.top_k > 0 and p.top_k * _TOPK_MAX_FRACTION <= self.n_vocab:
            k = p.top_k
        else:
            return None
        assert req.sampler is not None  # made when the request was admitted
        forced = req.sampler.penalized_tokens()
        if not forced.size and mask is None:
            return k
        return (k, forced if forced.size else None, mask)

    def _sample(self, seqs: list[SequenceState], logits: np.ndarray) -> None:
        reqs = [_req(s) for s in seqs]
        masks: list[np.ndarray | None] | None = None
        if any(r.constraint is not None for r in reqs):
            masks = [r.mask if r.constraint is not None else None for r in reqs]
        n_top = None
        if any(r.params.logprobs for r in reqs):
            n_top = [r.params.top_logprobs if r.params.logprobs else -1 for r in reqs]
        samplers = [r.sampler for r in reqs]
        assert all(s is not None for s in samplers)  # made when the request was admitted
        tokens, logprob, top_ids, top_lp, errors = self._sampler.try_sample(
            samplers,  # type: ignore[arg-type]
            logits,
            masks,
            n_top,
        )
        now = time.perf_counter()
        for i, seq in enumerate(seqs):
            req = reqs[i]
            if errors[i] is not None:
                self._fail(seq, BitnetError(f"sampling: {errors[i]}"))
                continue
            if req.t_first is None:
                req.t_first = now
            lp = None
            if req.params.logprobs:
                lp = (float(logprob[i]), top_ids[i, : req.params.top_logprobs], top_lp[i])
            self._guarded(seq, self._on_token, seq, req, int(tokens[i]), lp)

    def _guarded(self, seq: SequenceState, fn: Any, *args: Any) -> None:
        """fn(*args) for one request; an exception fails that request only."""
        try:
            fn(*args)
        except Exception as e:  # noqa: BLE001 (this request fails, the others go on)
            self._fail(seq, e)

    def _fail(self, seq: SequenceState, error: BaseException) -> None:
        """Ends one request with an error: its handle raises it, its slot and blocks are freed."""
        req = _req(seq)
        if req.finished:
            return
        req.finished = True
        failure = BitnetError(
            f"request {seq.request_id} failed on the engine thread: {type(error).__name__}: {error}"
        )
        failure.__cause__ = error
        with self._lock:
            if seq.status is not SeqStatus.FINISHED:
                self._sched.finish(seq)
            self._counts["failed"] += 1
            self._counts["generated"] += len(req.generated)
        req.handle._fail(failure)

    def _on_token(
        self,
        seq: SequenceState,
        req: _Request,
        t: int,
        raw_lp: tuple[float, np.ndarray, np.ndarray] | None,
    ) -> None:
        lp = None
        if raw_lp is not None:  # (logprob, top ids, top logprobs) of this row
            top = tuple(
                TopLogprob(int(j), self._bytes(int(j)), float(v))
                for j, v in zip(raw_lp[1], raw_lp[2][: len(raw_lp[1])], strict=True)
                if j >= 0
            )
            lp = TokenLogprob(t, self._bytes(t), raw_lp[0], top)
        if t in req.eos:
            self._end(seq, "stop")
            return
        seq.tokens.append(t)
        req.generated.append(t)
        assert req.sampler is not None
        req.sampler.accept(t, True)
        if lp is not None:
            req.logprobs.append(lp)
        if req.constraint is not None:
            req.constraint.accept(t)
        piece = req.text.push(self._bytes(t))
        reason: FinishReason | None = None
        if req.text.stopped or (req.constraint is not None and req.constraint.is_finished()):
            reason = "stop"
        elif len(req.generated) >= req.params.max_tokens:
            reason = "length"
        elif len(seq.tokens) >= self.n_ctx:
            # The context is full: prompt + generated = n_ctx. (The next token would need a
            # position past it; one sampled from the last position would exceed n_ctx.)
            reason = "context"
        token_lp = (lp,) if lp is not None else (() if req.params.logprobs else None)
        if reason is not None:
            self._end(seq, reason, piece=piece, token_ids=(t,), logprobs=token_lp)
            return
        req.parts.append(piece)
        req.handle._push(Chunk(piece, (t,), token_lp))

    def _end(
        self,
        seq: SequenceState,
        reason: FinishReason,
        *,
        piece: str = "",
        token_ids: tuple[int, ...] = (),
        logprobs: tuple[TokenLogprob, ...] | None = None,
    ) -> None:
        req = _req(seq)
        if req.finished:
            return
        text = piece + req.text.flush()
        req.parts.append(text)
        now = time.perf_counter()
        start = req.t_scheduled if req.t_scheduled is not None else now
        first = req.t_first if req.t_first is not None else now
        timings = Timings(
            queued_s=start - req.t_submit,
            prompt_s=max(0.0, first - start) if req.t_scheduled is not None else 0.0,
            generate_s=now - first if req.t_first is not None else 0.0,
            prompt_tokens_computed=(req.n_prompt - req.n_cached_tokens)
            if req.t_scheduled is not None
            else 0,
        )
        completion = Completion(
            text="".join(req.parts),
            token_ids=tuple(req.generated),
            finish_reason=reason,
            prompt_tokens=req.n_prompt,
            completion_tokens=len(req.generated),
            logprobs=tuple(req.logprobs) if req.params.logprobs else None,
            stop_sequence=req.text.stop_sequence,
            request_id=seq.request_id,
            timings=timings,
        )
        if logprobs is None and req.params.logprobs:
            logprobs = ()
        req.finished = True  # only now: should anything above raise, _fail() still ends it
        with self._lock:
            if seq.status is not SeqStatus.FINISHED:  # (cancelled ones are already released)
                self._sched.finish(seq)
            self._counts["generated"] += len(req.generated)
            self._counts["finished"][reason] += 1
            if req.t_scheduled is not None:
                service = now - req.t_scheduled
                self._service_s = (
                    service if not self._service_s else 0.8 * self._service_s + 0.2 * service
                )
        req.handle._push(Chunk(text, token_ids, logprobs, finish_reason=reason), completion)


def _req(seq: SequenceState) -> _Request:
    req = seq.payload
    assert isinstance(req, _Request)
    return req


def _check_int(name: str, value: Any, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ParameterError(name, f"{name} must be an integer, got {value!r}")
    if value < lo:
        raise ParameterError(name, f"{name} must be >= {lo}, got {value}")
