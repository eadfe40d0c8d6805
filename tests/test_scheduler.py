"""The scheduler and block manager, driven by a fake executor (no model): continuous batching,
decode-first steps, chunked prefill, admission under a KV budget, the bounded queue,
cancellation in every state, preemption, the prefix cache; every run ends with every slot and
every block free."""

from __future__ import annotations

import random

import numpy as np
import pytest

from bitnet.engine.kv_blocks import BlockManager, BlockTable, block_hashes
from bitnet.engine.scheduler import Scheduler, SeqStatus, SequenceState, StepCost, StepPlan
from bitnet.errors import ContextLengthError, ParameterError, QueueFullError

VOCAB = 97


def next_token(tokens: list[int]) -> int:
    """The fake model: the next token depends on the whole sequence so far (so a cache that
    held the wrong content would show in the output)."""
    return (sum(t * (i + 1) for i, t in enumerate(tokens)) * 31 + len(tokens)) % VOCAB


def alone(prompt: list[int], max_new: int, n_ctx: int) -> list[int]:
    tokens = list(prompt)
    out: list[int] = []
    while len(out) < max_new and len(tokens) < n_ctx:
        t = next_token(tokens)
        out.append(t)
        tokens.append(t)
    return out


class FakeEngine:
    """Runs plans against a fake KV cache that records which token each position holds, and
    checks that every chunk reads exactly its own sequence's tokens."""

    def __init__(self, sched: Scheduler) -> None:
        self.s = sched
        bm = sched.blocks
        self.kv = np.full((bm.n_blocks, bm.block_tokens), -1, dtype=np.int64)
        self.max_new: dict[int, int] = {}
        self.out: dict[int, list[int]] = {}
        self.finish_reason: dict[int, str] = {}
        self.plans: list[StepPlan] = []

    def submit(self, prompt: list[int], max_new: int) -> SequenceState:
        seq = SequenceState(
            request_id=f"r{len(self.out)}", tokens=list(prompt), n_prompt=len(prompt)
        )
        self.s.add(seq)
        self.max_new[id(seq)] = max_new
        self.out[id(seq)] = []
        return seq

    def step(self, prefill_limit: int | None = None) -> StepPlan:
        s = self.s
        plan = s.schedule(prefill_limit)
        self.plans.append(plan)
        assert plan.n_tokens <= s.n_batch
        assert len(s.running) <= s.n_parallel
        bt = s.blocks.block_tokens
        for seq in plan.cancelled:
            self.finish_reason[id(seq)] = "cancelled"
        for c in plan.chunks:
            seq = c.seq
            assert c.start == seq.n_computed and c.n >= 1
            table = seq.table.blocks
            assert len(table) * bt >= c.start + c.n
            # Everything before the chunk is in the cache: this sequence's own tokens.
            for p in range(c.start):
                assert self.kv[table[p // bt], p % bt] == seq.tokens[p], (seq.request_id, p)
            for p in range(c.start, c.start + c.n):
                block = table[p // bt]
                assert s.blocks.refcount(block) == 1, "a shared block is never written"
                self.kv[block, p % bt] = seq.tokens[p]
        s.complete(plan)
        for c in plan.chunks:
            seq = c.seq
            if not c.reaches_end or seq.status is not SeqStatus.RUNNING:
                continue
            out = self.out[id(seq)]
            if len(out) >= self.max_new[id(seq)]:
                self._finish(seq, "length")
                continue
            if len(seq.tokens) >= s.n_ctx:  # a prompt of n_ctx tokens: no room for more
                self._finish(seq, "context")
                continue
            t = next_token(seq.tokens)
            out.append(t)
            seq.tokens.append(t)
            if len(out) >= self.max_new[id(seq)]:
                self._finish(seq, "length")
            elif len(seq.tokens) >= s.n_ctx:
                self._finish(seq, "context")
        s.check()
        return plan

    def _finish(self, seq: SequenceState, reason: str) -> None:
        self.s.finish(seq)
        self.finish_reason[id(seq)] = reason

    def run(self, max_steps: int = 10_000) -> int:
        steps = 0
        while self.s.has_work:
            self.step()
            steps += 1
            assert steps < max_steps, "no progress"
        return steps

    def assert_all_free(self) -> None:
        s = self.s
        assert not s.running and not s.waiting
        assert s.blocks.n_free == s.blocks.n_blocks and s.blocks.n_held == 0
        s.check()


def make(
    n_blocks: int = 64,
    bt: int = 4,
    n_ctx: int = 64,
    n_batch: int = 16,
    n_parallel: int = 4,
    max_queue: int = 16,
    prefill: str = "round_robin",
    prefix_cache: bool = True,
) -> FakeEngine:
    bm = BlockManager(n_blocks, bt, prefix_cache=prefix_cache)
    sched = Scheduler(
        bm,
        n_ctx=n_ctx,
        n_batch=n_batch,
        n_parallel=n_parallel,
        max_queue=max_queue,
        prefill=prefill,  # type: ignore[arg-type]
    )
    return FakeEngine(sched)


def prompt(seed: int, n: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(VOCAB) for _ in range(n)]


# -- joining, finishing, batching --------------------------------------------------------------


def test_requests_join_and_leave_between_steps():
    e = make()
    a = e.submit(prompt(1, 10), 8)
    e.step()
    e.step()
    b = e.submit(prompt(2, 3), 20)  # joins while a runs
    e.run()
    assert e.out[id(a)] == alone(prompt(1, 10), 8, 64)
    assert e.out[id(b)] == alone(prompt(2, 3), 20, 64)
    assert e.finish_reason[id(a)] == e.finish_reason[id(b)] == "length"
    # a and b shared steps: b's prompt ran in a step where a decoded.
    both = [p for p in e.plans if {c.seq.request_id for c in p.chunks} == {"r0", "r1"}]
    assert both
    e.assert_all_free()


def test_every_step_decodes_every_running_sequence_first():
    e = make(n_blocks=128, n_ctx=200, n_batch=16, n_parallel=4)
    short = [e.submit(prompt(i, 3), 30) for i in range(3)]
    for _ in range(4):
        e.step()
    long = e.submit(prompt(9, 150), 2)  # a long prompt arrives while three decode
    decoding_steps = 0
    while long.n_computed < 150:
        plan = e.step()
        ones = [c for c in plan.chunks if c.n == 1 and c.seq in short]
        assert len(ones) == sum(s.status is SeqStatus.RUNNING for s in short) or not ones
        if any(c.seq is long for c in plan.chunks):
            decoding_steps += 1
            assert len(ones) == 3  # the long prompt never stalls the decodes
            assert plan.n_tokens == 16 or long.n_computed == 150  # the step is full
    assert decoding_steps >= 150 // 13
    e.run()
    e.assert_all_free()


@pytest.mark.parametrize("policy", ["round_robin", "fcfs"])
def test_short_prompt_behind_a_long_one(policy):
    """Round-robin gives a short prompt its first token within a few steps of a long one;
    first-come-first-served makes it wait for the whole long prefill."""
    e = make(n_blocks=256, n_ctx=512, n_batch=32, n_parallel=4, prefill=policy)
    long = e.submit(prompt(1, 400), 1)
    short = e.submit(prompt(2, 10), 1)
    steps_to_first = {}
    step = 0
    while e.s.has_work:
        e.step()
        step += 1
        for seq in (long, short):
            if e.out[id(seq)] and id(seq) not in steps_to_first:
                steps_to_first[id(seq)] = step
    if policy == "round_robin":
        assert steps_to_first[id(short)] == 1  # 10 tokens fit its half of the first step
    else:
        assert steps_to_first[id(short)] > 400 // 32
    assert steps_to_first[id(long)] <= 410 // 32 + 1  # the long one loses at most a step
    e.assert_all_free()


def test_round_robin_shares_are_fair_and_fill_the_budget():
    e = make(n_blocks=512, n_ctx=300, n_batch=30, n_parallel=4)
    seqs = [e.submit(prompt(i, n), 1) for i, n in enumerate([200, 5, 200, 100])]
    plan = e.step()
    got = {c.seq.request_id: c.n for c in plan.chunks}
    assert got["r1"] == 5  # less than its share: all of it
    assert sorted([got["r0"], got["r2"], got["r3"]]) == [8, 8, 9]  # 25 split evenly
    assert plan.n_tokens == 30
    e.run()
    for i, n in enumerate([200, 5, 200, 100]):
        assert e.out[id(seqs[i])] == alone(prompt(i, n), 1, 300)
    e.assert_all_free()


def test_n_parallel_caps_running_and_the_rest_wait():
    e = make(n_parallel=2)
    seqs = [e.submit(prompt(i, 5), 6) for i in range(5)]
    e.step()
    assert len(e.s.running) == 2 and len(e.s.waiting) == 3
    e.run()
    for i, seq in enumerate(seqs):
        assert e.out[id(seq)] == alone(prompt(i, 5), 6, 64)
    e.assert_all_free()


# -- queue, context, budget --------------------------------------------------------------------


def test_queue_full_and_prompt_too_long():
    e = make(n_parallel=1, max_queue=2)
    e.submit(prompt(0, 5), 4)
    e.submit(prompt(1, 5), 4)
    with pytest.raises(QueueFullError, match="2 requests waiting") as info:
        e.submit(prompt(2, 5), 4)
    assert info.value.retry_after_s > 0
    with pytest.raises(ContextLengthError, match="65 tokens but the context holds 64") as ctx:
        e.submit(prompt(3, 65), 4)
    assert (ctx.value.n_prompt, ctx.value.n_ctx) == (65, 64)
    e.step()  # the first is admitted: the queue has room again
    e.submit(prompt(2, 5), 4)
    e.run()
    e.assert_all_free()


def test_budget_full_new_requests_wait_then_run():
    # 16 blocks of 4 = 64 tokens; each request holds 40 prompt tokens: only one fits at a time.
    e = make(n_blocks=16, bt=4, n_ctx=64, n_batch=64, n_parallel=4)
    a = e.submit(prompt(1, 40), 4)
    b = e.submit(prompt(2, 40), 4)
    e.step()
    assert a.status is SeqStatus.RUNNING and b.status is SeqStatus.WAITING
    while a.status is SeqStatus.RUNNING:
        assert b.status is SeqStatus.WAITING
        e.step()
    e.run()
    assert e.out[id(b)] == alone(prompt(2, 40), 4, 64)
    e.assert_all_free()


def test_context_full_finishes_with_context():
    e = make(n_ctx=12, n_blocks=8)
    seq = e.submit(prompt(1, 10), 100)
    e.run()
    # Prompt + generated fill the context and no more: the last token is sampled from
    # position 10's logits (position 11 is never computed).
    assert len(e.out[id(seq)]) == 12 - 10
    assert e.finish_reason[id(seq)] == "context"
    assert e.out[id(seq)] == alone(prompt(1, 10), 100, 12)
    e.assert_all_free()


def test_preemption_recomputes_and_changes_nothing():
    # 10 blocks of 4 = 40 tokens for three sequences that each grow to 30: some must yield.
    e = make(n_blocks=10, bt=4, n_ctx=32, n_batch=8, n_parallel=3)
    seqs = [e.submit(prompt(i, 6), 24) for i in range(3)]
    e.run()
    assert e.s.preemptions_total > 0
    assert any(p.preempted for p in e.plans)
    for p in e.plans:
        if p.preempted:
            assert not p.admitted  # a step that preempts admits nothing new
    for i, seq in enumerate(seqs):
        assert e.out[id(seq)] == alone(prompt(i, 6), 24, 32)
    assert sum(s.n_preemptions for s in seqs) == e.s.preemptions_total
    e.assert_all_free()


def test_admission_keeps_one_spare_block_per_running_sequence():
    e = make(n_blocks=12, bt=4, n_ctx=40, n_batch=64, n_parallel=4)
    a = e.submit(prompt(1, 18), 8)  # 5 blocks (its first decode, position 18, fits in them)
    e.step()
    b = e.submit(prompt(2, 24), 8)  # 6 blocks: 12 - 5 = 7 free, minus 1 spare for a: fits
    c = e.submit(prompt(3, 1), 8)  # 1 block, but 12 - 11 = 1 free < 1 + 2 spare: waits
    e.step()
    assert a.status is b.status is SeqStatus.RUNNING
    assert c.status is SeqStatus.WAITING
    e.run()
    e.assert_all_free()


def test_bad_sizes_are_parameter_errors():
    bm = BlockManager(4, 4)
    with pytest.raises(ParameterError, match="n_batch") as e1:
        Scheduler(bm, n_ctx=16, n_batch=2, n_parallel=4, max_queue=1)
    assert e1.value.param == "n_batch"
    with pytest.raises(ParameterError, match="at least one full context") as e2:
        Scheduler(bm, n_ctx=17, n_batch=8, n_parallel=4, max_queue=1)
    assert e2.value.param == "kv_budget"
    with pytest.raises(ParameterError, match="n_parallel"):
        Scheduler(bm, n_ctx=16, n_batch=8, n_parallel=0, max_queue=1)


# -- cancellation --------------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["queued", "prefilling", "decoding"])
def test_cancel_in_every_state_frees_slot_and_blocks_at_the_next_step(state):
    e = make(n_blocks=64, n_ctx=100, n_batch=8, n_parallel=1)
    first = e.submit(prompt(1, 30), 20)
    other = e.submit(prompt(2, 5), 5)  # queued behind the first (n_parallel 1)
    victim = {"queued": other, "prefilling": first, "decoding": first}[state]
    e.step()
    if state == "decoding":
        while first.n_pending != 1:
            e.step()
        e.step()
        assert e.out[id(first)]
    assert (victim.status is SeqStatus.WAITING) == (state == "queued")
    e.s.cancel(victim)
    e.s.cancel(victim)  # idempotent
    held_before = e.s.blocks.n_held
    plan = e.step()
    assert plan.cancelled == [victim]
    assert victim.status is SeqStatus.FINISHED
    assert all(c.seq is not victim for c in plan.chunks)
    if state != "queued":
        assert e.s.blocks.n_held < held_before or other.status is SeqStatus.RUNNING
        assert other in e.s.running  # its slot went to the next in line
    e.run()
    assert e.finish_reason[id(victim)] == "cancelled"
    survivor = other if victim is first else first
    n = 30 if survivor is first else 5
    assert e.out[id(survivor)] == alone(
        prompt(1 if survivor is first else 2, n), 20 if survivor is first else 5, 100
    )
    e.assert_all_free()


def test_cancel_after_finish_is_a_no_op():
    e = make()
    seq = e.submit(prompt(1, 5), 2)
    e.run()
    e.s.cancel(seq)
    assert not e.s.schedule().cancelled
    e.assert_all_free()


# -- prefix cache --------------------------------------------------------------------------------


def test_prefix_cache_hit_reuses_full_blocks_only():
    e = make(n_blocks=64, bt=4, n_ctx=64)
    system = prompt(7, 13)  # 3 full blocks + 1 token
    a = e.submit([*system, 1, 2], 3)
    e.run()
    b = e.submit([*system, 5, 6, 7], 3)
    e.step()
    assert b.n_cached_tokens == 12  # three full blocks; the 13th token is in a partial block
    e.run()
    assert e.out[id(b)] == alone([*system, 5, 6, 7], 3, 64)
    assert e.s.prefix_hit_tokens_total == 12
    # An identical prompt that is a multiple of the block size: its last block is recomputed.
    c = e.submit(list(a.tokens[:16]), 2)
    e.step()
    assert c.n_cached_tokens == 12
    e.run()
    e.assert_all_free()


def test_prefix_shared_by_running_sequences():
    e = make(n_blocks=64, bt=4, n_ctx=64, n_parallel=4)
    system = prompt(3, 16)
    first = e.submit([*system, 1], 6)
    e.step()
    e.step()  # the system prompt's blocks are computed and registered
    others = [e.submit([*system, 10 + i], 6) for i in range(3)]
    e.step()
    shared = first.table.blocks[:4]
    assert all(o.table.blocks[:4] == shared for o in others)
    assert all(e.s.blocks.refcount(b) == 4 for b in shared)
    e.run()
    for i, o in enumerate(others):
        assert e.out[id(o)] == alone([*system, 10 + i], 6, 64)
    assert e.s.blocks.n_cached > 0  # still cached after everyone finished
    e.assert_all_free()


def test_eviction_is_lru_and_takes_a_finished_sequence_s_last_blocks_first():
    bm = BlockManager(6, 2)
    t1 = BlockTable()
    toks = [1, 2, 3, 4, 5, 6]
    assert bm.allocate(t1, bm.match(toks, 5), 6)
    bm.register(t1, toks, 6)
    b0, b1, b2 = t1.blocks
    bm.free(t1)
    assert bm.n_cached == 3 and bm.n_free == 6
    # Three empty blocks go first, then the finished sequence's blocks from its last one.
    t2 = BlockTable()
    assert bm.grow(t2, 8)  # 4 blocks: the 3 empty ones, then b2
    assert b2 in t2.blocks and b0 not in t2.blocks and b1 not in t2.blocks
    assert bm.evictions_total == 1
    m = bm.match(toks, 6)
    assert m.blocks == (b0, b1)  # the prefix survives, the chain breaks at the evicted block
    bm.free(t2)
    bm.check()


def test_match_and_allocate_are_all_or_nothing():
    bm = BlockManager(4, 2)
    t = BlockTable()
    assert not bm.allocate(t, bm.match([1] * 10, 9), 10)  # 5 blocks > 4
    assert t.blocks == [] and bm.n_free == 4
    assert bm.allocate(t, bm.match([1] * 8, 7), 8)
    assert not bm.grow(t, 9) and len(t.blocks) == 4
    bm.free(t)
    bm.check()


def test_prefix_cache_off_never_matches():
    e = make(prefix_cache=False)
    p = prompt(1, 20)
    e.submit(p, 2)
    e.run()
    b = e.submit(p, 2)
    e.step()
    assert b.n_cached_tokens == 0 and e.s.blocks.n_cached == 0
    e.run()
    e.assert_all_free()


def test_block_hashes_chain():
    a = block_hashes([1, 2, 3, 4, 5, 6], 2, 3)
    b = block_hashes([9, 9, 3, 4, 5, 6], 2, 3)
    assert len(set(a)) == 3
    assert a[0] != b[0] and a[1] != b[1]  # the same tokens after a different prefix differ


# -- a random workload ---------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("policy", ["round_robin", "fcfs"])
def test_random_workload(seed, policy):
    rng = random.Random(seed)
    e = make(
        n_blocks=rng.choice([24, 40, 100]),
        bt=rng.choice([2, 4, 8]),
        n_ctx=48,
        n_batch=rng.choice([8, 16, 64]),
        n_parallel=rng.choice([1, 3, 8]),
        max_queue=6,
        prefill=policy,
    )
    systems = [prompt(100 + i, 12) for i in range(3)]
    live: list[SequenceState] = []
    expected: dict[int, list[int]] = {}
    cancelled: set[int] = set()
    for _ in range(300):
        r = rng.random()
        if r < 0.25:
            p = rng.choice(systems)[: rng.randint(0, 12)] + prompt(
                rng.randrange(10**6), rng.randint(1, 20)
            )
            n = rng.randint(0, 30)
            try:
                seq = e.submit(p, n)
            except QueueFullError:
                continue
            live.append(seq)
            expected[id(seq)] = alone(p, n, 48)
        elif r < 0.3 and live:
            seq = rng.choice(live)
            if seq.status is not SeqStatus.FINISHED:
                e.s.cancel(seq)
                cancelled.add(id(seq))
        if e.s.has_work:
            e.step()
    e.run()
    for seq in live:
        got = e.out[id(seq)]
        if id(seq) in cancelled and e.finish_reason[id(seq)] == "cancelled":
            assert got == expected[id(seq)][: len(got)]
        else:
            assert got == expected[id(seq)], seq.request_id
    e.assert_all_free()


# -- step-time bound ---------------------------------------------------------------------------


def test_prefill_limit_applies_only_while_someone_decodes():
    e = make(n_blocks=256, n_ctx=300, n_batch=64, n_parallel=4)
    long = e.submit(prompt(1, 200), 3)
    assert e.step(prefill_limit=5).n_tokens == 64  # nobody decodes: the whole n_batch
    short = e.submit(prompt(2, 3), 30)
    while not e.out[id(short)]:
        e.step()
    plan = e.step(prefill_limit=0)  # a limit of 0 still moves prompts on, one token
    assert [c.n for c in plan.chunks if c.seq is long] == [1]
    while long.n_computed < 200:
        plan = e.step(prefill_limit=5)
        assert [c.n for c in plan.chunks if c.seq is short] == [1]
        assert plan.n_tokens - 1 <= 5
    e.run()
    assert e.out[id(long)] == alone(prompt(1, 200), 3, 300)
    e.assert_all_free()


def test_step_cost_fits_a_line():
    cost = StepCost()
    assert cost.predict(1) is None and cost.tokens_within(1.0) is None
    for n in (1, 8, 3, 64, 16, 1, 2):
        cost.observe(n, 0.033 + 0.014 * (n - 1))
    a, b = cost.coefficients()  # type: ignore[misc]
    assert a == pytest.approx(0.019, abs=1e-9) and b == pytest.approx(0.014, abs=1e-9)
    assert cost.tokens_within(0.25) == int((0.25 - 0.019) / 0.014)
    same = StepCost()
    for _ in range(5):
        same.observe(4, 0.1)
    assert same.coefficients() == (0.0, pytest.approx(0.025))  # no spread: a = 0, per token
