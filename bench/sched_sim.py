#!/usr/bin/env python3
"""Simulates the engine's scheduler on a step-cost model, to compare prefill policies.

    python bench/sched_sim.py [--step-ms 33] [--token-ms 14] [--n-parallel 8] [--n-batch 512]

The real :class:`bitnet.engine.scheduler.Scheduler` and block manager run against a fake clock:
a step computing T tokens takes ``step_ms + token_ms * (T - 1)`` milliseconds (one read of the
weights per step, then compute per token). The defaults are the 2B4T shape on the 2-core
development machine (docs/benchmarks.md: tg about 30 tokens/s, pp about 70 tokens/s on 2
threads). Requests sample nothing: each generates its fixed number of tokens.

Workloads (each run under "round_robin" and "fcfs", with the engine's step-time target
``--max-step-ms`` and without it, n_batch alone bounding a step):

* ``mixed``: Poisson arrivals (``--rate`` per second) of chat-like requests, 80% with a short
  prompt (20-100 tokens) and 20% with a long one (1000-2000), 64 generated tokens each;
* ``burst``: 8 equal prompts of 500 tokens at once (the case that favours FCFS);
* ``one long``: a 2,000-token prompt, then 7 short ones 0.5 s later.

Reported per policy: time to first token (TTFT) of short and long prompts (mean, p50, p99), the
longest gap between two tokens of a decoding request, and throughput. A model of the cost, not a
measurement: compare the policies with it, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from dataclasses import dataclass, field

from bitnet.engine.kv_blocks import BlockManager
from bitnet.engine.scheduler import Scheduler, SeqStatus, SequenceState, StepCost


@dataclass
class Req:
    arrival_s: float
    n_prompt: int
    n_gen: int
    first_s: float | None = None
    token_times: list[float] = field(default_factory=list)


def simulate(
    reqs: list[Req],
    policy: str,
    *,
    step_ms: float,
    token_ms: float,
    n_parallel: int,
    n_batch: int,
    max_step_ms: float | None,
    n_ctx: int = 4096,
) -> tuple[list[Req], float, int]:
    blocks = BlockManager(-(-n_parallel * n_ctx // 32), 32, prefix_cache=False)
    sched = Scheduler(
        blocks,
        n_ctx=n_ctx,
        n_batch=n_batch,
        n_parallel=n_parallel,
        max_queue=10**6,
        prefill=policy,  # type: ignore[arg-type]
    )
    pending = sorted(reqs, key=lambda r: r.arrival_s)
    now = 0.0
    i = 0
    tokens = 0
    rng = random.Random(0)
    cost = StepCost()
    while i < len(pending) or sched.has_work:
        while i < len(pending) and pending[i].arrival_s <= now:
            r = pending[i]
            toks = [rng.randrange(1000) for _ in range(r.n_prompt)]
            sched.add(SequenceState(f"r{i}", toks, r.n_prompt, payload=r))
            i += 1
        if not sched.has_work:
            now = pending[i].arrival_s
            continue
        plan = sched.schedule(prefill_limit(cost, sched, max_step_ms))
        n = plan.n_tokens
        dt = (step_ms + token_ms * max(0, n - 1)) / 1000
        cost.observe(n, dt)
        now += dt
        tokens += n
        sched.complete(plan)
        for c in plan.chunks:
            if not c.reaches_end or c.seq.status is not SeqStatus.RUNNING:
                continue
            r = c.seq.payload
            assert isinstance(r, Req)
            if r.first_s is None:
                r.first_s = now
            r.token_times.append(now)
            if len(r.token_times) >= r.n_gen:
                sched.finish(c.seq)
            else:
                c.seq.tokens.append(0)
    return reqs, now, tokens


def prefill_limit(cost: StepCost, sched: Scheduler, max_step_ms: float | None) -> int | None:
    """The engine's rule (Engine._prefill_limit)."""
    if max_step_ms is None:
        return None
    n = len(sched.running)
    alone = cost.predict(n)
    if alone is None:
        return None
    fits = cost.tokens_within(max(max_step_ms / 1000, 1.5 * alone))
    return None if fits is None else fits - n


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def report(name: str, policy: str, reqs: list[Req], wall: float) -> str:
    short = [r.first_s - r.arrival_s for r in reqs if r.n_prompt < 500 and r.first_s]
    long = [r.first_s - r.arrival_s for r in reqs if r.n_prompt >= 500 and r.first_s]
    gaps = [b - a for r in reqs for a, b in zip(r.token_times, r.token_times[1:], strict=False)]
    gen = sum(len(r.token_times) for r in reqs)

    def stats(v: list[float]) -> str:
        if not v:
            return "- | - | -"
        return f"{statistics.mean(v):.2f} | {pct(v, 0.5):.2f} | {pct(v, 0.99):.2f}"

    return (
        f"| {name} | {policy} | {stats(short)} | {stats(long)} | "
        f"{max(gaps, default=0) * 1000:.0f} | {gen / wall:.1f} |"
    )


def workloads(rate: float, seed: int) -> dict[str, list[Req]]:
    rng = random.Random(seed)
    mixed = []
    t = 0.0
    for _ in range(120):
        t += rng.expovariate(rate)
        n = rng.randint(1000, 2000) if rng.random() < 0.2 else rng.randint(20, 100)
        mixed.append(Req(t, n, 64))
    burst = [Req(0.0, 500, 64) for _ in range(8)]
    one_long = [Req(0.0, 2000, 64)] + [Req(0.5, rng.randint(20, 100), 64) for _ in range(7)]
    return {"mixed": mixed, "burst": burst, "one long": one_long}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step-ms", type=float, default=33.0, help="cost of a step of 1 token")
    ap.add_argument("--token-ms", type=float, default=14.0, help="cost of each further token")
    ap.add_argument("--n-parallel", type=int, default=8)
    ap.add_argument("--n-batch", type=int, default=512)
    ap.add_argument("--rate", type=float, default=0.05, help="mixed: arrivals per second")
    ap.add_argument("--max-step-ms", type=float, default=250.0, help="the engine's step target")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(
        f"step cost {args.step_ms:g} ms + {args.token_ms:g} ms/token, n_parallel "
        f"{args.n_parallel}, n_batch {args.n_batch}; times in seconds\n"
    )
    print(
        "| workload | policy | TTFT short mean | p50 | p99 | TTFT long mean | p50 | p99 | "
        "longest gap ms | gen tokens/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, base in workloads(args.rate, args.seed).items():
        for policy in ("round_robin", "fcfs"):
            for limit in (args.max_step_ms, None):
                reqs = [Req(r.arrival_s, r.n_prompt, r.n_gen) for r in base]
                done, wall, _ = simulate(
                    reqs,
                    policy,
                    step_ms=args.step_ms,
                    token_ms=args.token_ms,
                    n_parallel=args.n_parallel,
                    n_batch=args.n_batch,
                    max_step_ms=limit,
                )
                label = f"{policy}, {f'{limit:g} ms steps' if limit else 'n_batch only'}"
                print(report(name, label, done, wall))
    return 0


if __name__ == "__main__":
    sys.exit(main())
