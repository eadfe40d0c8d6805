"""Continuous batching policy: which tokens of which sequences go into the next step.

Pure policy, no threads and no model: the engine calls :meth:`Scheduler.schedule` before each
step, runs the step it describes, then :meth:`Scheduler.complete`; it adds, finishes and cancels
sequences between steps. Tests drive it with a fake executor.

The policy (docs/architecture.md discusses the choices):

1. **Cancellations first.** A sequence cancelled in any state (waiting, prefilling, decoding)
   leaves at the next schedule(): its blocks are freed and it is reported in the plan.
2. **Decodes first.** Every running sequence with exactly one token to compute (the token it
   sampled last) gets that token, oldest first, so a step never makes a decoding sequence wait
   for someone's prompt. Decoding needs a new block every block_tokens positions; when none is
   free the *newest* running sequence is preempted: its blocks are freed (full ones stay in the
   prefix cache, so its recomputation is often a cache hit), it goes back to the head of the
   queue with the tokens it generated so far, and it is recomputed when readmitted. With the
   decoder's batch invariance the recomputed cache is bit-identical, so preemption never changes
   a request's output, only its timing. A step that preempts admits nothing new.
3. **Admission.** While fewer than n_parallel sequences run and the step has room, the head of
   the waiting queue (strictly first come, first served: no request overtakes an older one, so
   none starves) is admitted if the KV budget can hold its whole prompt now (after the prefix
   cache's hits) *plus one spare block per running sequence* (a watermark, so that admitting it
   does not force a preemption at the next block boundary). All its prompt blocks are taken at
   admission: a prefill that has started always completes.
4. **Prefill chunks.** The step's remaining token budget (n_batch minus the decodes, and while
   anyone decodes at most the engine's ``prefill_limit``, which keeps the step within a time
   target) is shared among the sequences with prompt tokens left: ``"round_robin"`` (the default) gives each an
   equal share (a sequence needing less than its share takes what it needs and the rest is
   shared again; the start of the order rotates every step), so a short prompt behind a
   2,000-token one gets its first token in a few steps instead of waiting for the long one;
   ``"fcfs"`` gives the whole budget to the oldest first. Both keep every step at most n_batch
   tokens, so a long prompt never stalls the decodes (bench/sched_sim.py measures both).

Finishing (EOS, stop strings, max_tokens, a full context) is the engine's decision; it calls
:meth:`Scheduler.finish`.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from ..errors import ContextLengthError, ParameterError, QueueFullError
from .kv_blocks import BlockManager, BlockTable

__all__ = [
    "PrefillPolicy",
    "ScheduledChunk",
    "Scheduler",
    "SeqStatus",
    "SequenceState",
    "StepCost",
    "StepPlan",
]

PrefillPolicy = Literal["round_robin", "fcfs"]


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(eq=False)
class SequenceState:
    """What the scheduler knows of one request.

    Attributes:
        request_id: The engine's id (for messages).
        tokens: The prompt followed by every token sampled so far (the last one is not yet in
            the cache while the request runs).
        n_prompt: Tokens of the prompt.
        n_computed: Positions whose K/V are in the cache.
        table: Its blocks.
        status: Waiting, running or finished.
        cancelled: Set by cancel(); acted on at the next schedule().
        n_cached_tokens: Prompt tokens taken from the prefix cache at the last admission.
        n_preemptions: Times it was preempted.
        payload: The engine's own per-request state (the scheduler never reads it).
    """

    request_id: str
    tokens: list[int]
    n_prompt: int
    n_computed: int = 0
    table: BlockTable = field(default_factory=BlockTable)
    status: SeqStatus = SeqStatus.WAITING
    cancelled: bool = False
    n_cached_tokens: int = 0
    n_preemptions: int = 0
    arrival: int = 0
    payload: object = None

    @property
    def n_pending(self) -> int:
        """Tokens known but not yet computed."""
        return len(self.tokens) - self.n_computed


@dataclass(frozen=True)
class ScheduledChunk:
    """tokens[start : start + n] of seq are computed in this step (positions start..)."""

    seq: SequenceState
    start: int
    n: int

    @property
    def reaches_end(self) -> bool:
        """Whether the chunk ends at the last known token (its logits decide the next one)."""
        return self.start + self.n == len(self.seq.tokens)


@dataclass
class StepPlan:
    """What schedule() decided."""

    chunks: list[ScheduledChunk] = field(default_factory=list)
    cancelled: list[SequenceState] = field(default_factory=list)  # finished by cancellation
    preempted: list[SequenceState] = field(default_factory=list)  # back in the queue
    admitted: list[SequenceState] = field(default_factory=list)

    @property
    def n_tokens(self) -> int:
        return sum(c.n for c in self.chunks)


class Scheduler:
    """Continuous batching over one KV cache (see the module docstring for the policy).

    Args:
        blocks: The cache's block manager.
        n_ctx: Most positions one sequence may hold.
        n_batch: Most tokens computed in one step (at least n_parallel).
        n_parallel: Most sequences running at once.
        max_queue: Most sequences waiting (submitting beyond raises QueueFullError).
        prefill: How prompt chunks share a step: "round_robin" or "fcfs".

    Raises:
        ParameterError: Inconsistent sizes (names the option).
    """

    def __init__(
        self,
        blocks: BlockManager,
        *,
        n_ctx: int,
        n_batch: int,
        n_parallel: int,
        max_queue: int,
        prefill: PrefillPolicy = "round_robin",
    ) -> None:
        if n_parallel < 1:
            raise ParameterError("n_parallel", f"n_parallel must be >= 1, got {n_parallel}")
        if n_batch < n_parallel:
            raise ParameterError(
                "n_batch",
                f"n_batch ({n_batch}) must be at least n_parallel ({n_parallel}): every running "
                "sequence decodes one token per step",
            )
        if max_queue < 0:
            raise ParameterError("max_queue", f"max_queue must be >= 0, got {max_queue}")
        if blocks.blocks_for(n_ctx) > blocks.n_blocks:
            raise ParameterError(
                "kv_budget",
                f"the KV budget ({blocks.n_blocks * blocks.block_tokens} tokens) must hold at "
                f"least one full context (n_ctx = {n_ctx})",
            )
        if prefill not in ("round_robin", "fcfs"):
            raise ParameterError(
                "prefill", f"prefill must be 'round_robin' or 'fcfs', got {prefill!r}"
            )
        self.blocks = blocks
        self.n_ctx = n_ctx
        self.n_batch = n_batch
        self.n_parallel = n_parallel
        self.max_queue = max_queue
        self.prefill = prefill
        self.waiting: deque[SequenceState] = deque()
        self.running: list[SequenceState] = []  # in admission order (oldest first)
        self._arrivals = 0
        self._rotation = 0
        self._cancels = 0  # sequences marked cancelled and not yet removed
        self.prefix_hit_tokens_total = 0
        self.prompt_tokens_total = 0  # prompt tokens admitted (first admission only)
        self.preemptions_total = 0

    # -- requests join and leave ---------------------------------------------------------------
    def add(self, seq: SequenceState) -> None:
        """Queues a new sequence.

        Raises:
            ContextLengthError: Its prompt does not fit in n_ctx.
            QueueFullError: max_queue sequences are waiting already (retry_after_s is left at
                its default; the engine fills in an estimate).
        """
        if len(seq.tokens) > self.n_ctx:
            raise ContextLengthError(len(seq.tokens), self.n_ctx)
        if not seq.tokens:
            raise ParameterError("prompt", "the prompt has no tokens")
        if len(self.waiting) >= self.max_queue:
            raise QueueFullError(
                f"the queue is full ({self.max_queue} requests waiting); try again later"
            )
        seq.arrival = self._arrivals
        self._arrivals += 1
        seq.status = SeqStatus.WAITING
        self.waiting.append(seq)

    def cancel(self, seq: SequenceState) -> None:
        """Marks a sequence cancelled; it leaves at the next schedule(). Idempotent."""
        if seq.status is not SeqStatus.FINISHED and not seq.cancelled:
            seq.cancelled = True
            self._cancels += 1

    def finish(self, seq: SequenceState) -> None:
        """Ends a running sequence (the engine's decision), freeing its blocks."""
        if seq.status is SeqStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SeqStatus.WAITING:
            self.waiting.remove(seq)
        else:
            return
        if seq.cancelled:
            self._cancels -= 1
        self._release(seq)

    def _release(self, seq: SequenceState) -> None:
        self.blocks.free(seq.table)
        seq.status = SeqStatus.FINISHED

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    # -- one step ------------------------------------------------------------------------------
    def schedule(self, prefill_limit: int | None = None) -> StepPlan:
        """Decides the next step (see the module docstring); the plan may have no chunks.

        Args:
            prefill_limit: While some sequence decodes in this step, the most prompt tokens the
                step may add (at least 1 is always given, so prompts progress). The engine
                derives it from a step-time target: on a CPU every prompt token of a step
                delays the decodes of that step. None: only n_batch limits.
        """
        plan = StepPlan()
        if self._cancels:
            self._drop_cancelled(plan)
        budget = self.n_batch
        # Decodes, oldest first. Preemption victims are the newest, which come later in this
        # loop (or are the sequence itself), so no chunk already planned is ever invalidated.
        for seq in list(self.running):
            if seq.status is not SeqStatus.RUNNING or seq.n_pending != 1:
                continue
            while not self.blocks.grow(seq.table, seq.n_computed + 1):
                victim = self.running[-1]
                self._preempt(victim)
                plan.preempted.append(victim)
                if victim is seq:
                    break
            if seq.status is SeqStatus.RUNNING:
                plan.chunks.append(ScheduledChunk(seq, seq.n_computed, 1))
                budget -= 1
        if plan.chunks and prefill_limit is not None:
            budget = min(budget, max(1, prefill_limit))
        if not plan.preempted:
            self._admit(plan, budget)
        decoding = {id(c.seq) for c in plan.chunks}
        prefilling = [s for s in self.running if id(s) not in decoding and s.n_pending > 0]
        if prefilling and budget > 0:
            shares = self._prefill_shares(budget, [s.n_pending for s in prefilling])
            for seq, n in zip(prefilling, shares, strict=True):
                if n:
                    plan.chunks.append(ScheduledChunk(seq, seq.n_computed, n))
        return plan

    def complete(self, plan: StepPlan) -> None:
        """Records that the plan's chunks were computed: advances the sequences and registers
        their blocks that became full in the prefix cache."""
        for chunk in plan.chunks:
            seq = chunk.seq
            if seq.status is not SeqStatus.RUNNING or seq.n_computed != chunk.start:
                continue  # finished (or cancelled and dropped) meanwhile
            seq.n_computed += chunk.n
            self.blocks.register(seq.table, seq.tokens, seq.n_computed)

    def _drop_cancelled(self, plan: StepPlan) -> None:
        for queue in (self.running, self.waiting):
            for seq in [s for s in queue if s.cancelled]:
                queue.remove(seq)
                self._release(seq)
                plan.cancelled.append(seq)
        self._cancels = 0

    def _preempt(self, seq: SequenceState) -> None:
        self.running.remove(seq)
        self.blocks.free(seq.table)
        seq.n_computed = 0
        seq.status = SeqStatus.WAITING
        seq.n_preemptions += 1
        self.preemptions_total += 1
        self.waiting.appendleft(seq)  # it arrived before everyone still waiting

    def _admit(self, plan: StepPlan, budget: int) -> None:
        while self.waiting and len(self.running) < self.n_parallel and budget > 0:
            seq = self.waiting[0]
            # At least the last token is computed: its logits pick the next token.
            match = self.blocks.match(seq.tokens, len(seq.tokens) - 1)
            if not self.blocks.allocate(
                seq.table, match, len(seq.tokens), reserve=len(self.running)
            ):
                return  # first come, first served: nobody overtakes the head
            self.waiting.popleft()
            cached = match.n_blocks * self.blocks.block_tokens
            seq.n_computed = cached
            if seq.n_preemptions == 0:
                seq.n_cached_tokens = cached
                self.prefix_hit_tokens_total += cached
                self.prompt_tokens_total += seq.n_prompt
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)
            plan.admitted.append(seq)
            budget -= 1  # it gets at least one token of this step

    def _prefill_shares(self, budget: int, needs: Sequence[int]) -> list[int]:
        n = len(needs)
        shares = [0] * n
        if self.prefill == "fcfs":
            for i, need in enumerate(needs):
                shares[i] = min(need, budget)
                budget -= shares[i]
            return shares
        # Water-filling: the smallest needs are met in full, the rest split evenly; units left
        # by the integer division go one each, starting at a position that rotates every step.
        left = budget
        for k, i in enumerate(sorted(range(n), key=lambda j: needs[j])):
            shares[i] = min(needs[i], left // (n - k))
            left -= shares[i]
        start = self._rotation % n
        self._rotation += 1
        for i in _rotated(range(n), start):
            if left == 0:
                break
            if shares[i] < needs[i]:
                shares[i] += 1
                left -= 1
        return shares

    # -- accounting ----------------------------------------------------------------------------
    def check(self) -> None:
        """Asserts the invariants (for tests)."""
        self.blocks.check()
        held: dict[int, int] = {}
        for seq in self.running:
            assert seq.status is SeqStatus.RUNNING
            assert len(seq.table.blocks) >= self.blocks.blocks_for(seq.n_computed)
            for b in seq.table.blocks:
                held[b] = held.get(b, 0) + 1
        for seq in self.waiting:
            assert seq.status is SeqStatus.WAITING and not seq.table.blocks
        for b in range(self.blocks.n_blocks):
            assert self.blocks.refcount(b) == held.get(b, 0), b
        assert len(self.running) <= self.n_parallel


class StepCost:
    """An online model of a step's duration: seconds = a + b * tokens.

    On a CPU a step reads the weights once (a) and then computes every token (b), so the time
    of a step is close to linear in its tokens. The fit is least squares with exponentially
    decaying weights (recent steps count most: the machine's load changes). While all observed
    steps have the same size, a is taken as 0 (b = time per token), which overestimates b and
    so errs towards shorter steps.
    """

    def __init__(self, decay: float = 0.95) -> None:
        self.decay = decay
        self._s0 = self._s1 = self._s2 = self._sy = self._sxy = 0.0

    def observe(self, n_tokens: int, seconds: float) -> None:
        d = self.decay
        x = float(n_tokens)
        self._s0 = d * self._s0 + 1.0
        self._s1 = d * self._s1 + x
        self._s2 = d * self._s2 + x * x
        self._sy = d * self._sy + seconds
        self._sxy = d * self._sxy + x * seconds

    def coefficients(self) -> tuple[float, float] | None:
        """(a, b), or None before the first step."""
        if self._s1 <= 0:
            return None
        det = self._s0 * self._s2 - self._s1 * self._s1
        if det > 1e-9 * self._s0 * self._s2:
            b = (self._s0 * self._sxy - self._s1 * self._sy) / det
            a = (self._sy - b * self._s1) / self._s0
            if a >= 0 and b > 0:
                return a, b
        return 0.0, self._sy / self._s1

    def predict(self, n_tokens: int) -> float | None:
        ab = self.coefficients()
        return None if ab is None else ab[0] + ab[1] * n_tokens

    def tokens_within(self, seconds: float) -> int | None:
        """Most tokens a step can hold and last at most `seconds` (None: no estimate yet)."""
        ab = self.coefficients()
        if ab is None:
            return None
        a, b = ab
        return max(0, int((seconds - a) / b))


def _rotated(items: Iterable[int], start: int) -> list[int]:
    seq = list(items)
    return seq[start:] + seq[:start]
