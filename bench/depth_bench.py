#!/usr/bin/env python3
"""Generation speed at a context depth (like ``llama-bench -d``), on the batched decoder.

    python bench/depth_bench.py -m FILE [-d 0,1024,4096] [-n 32] [-t 1,2] [-r 3]
        [--kv f16,q8_0,f32] [--block-tokens 32] [--fill copy|prefill]

For each KV cache type, positions [0, max depth) of a paged cache are filled: by default
(``--fill copy``) one block is prefilled and copied into every other block, which gives
attention the same memory to read as a real prefill at a fraction of its cost (attention's speed
does not depend on the values); ``--fill prefill`` runs the whole prefill (with the most threads
asked for), as ``llama-bench -d`` does. Then, for each depth and thread count, a decoder on that cache
generates n tokens one step at a time from that depth (tgN @ d), repeated r times. Prints one
line per measurement: median tokens/s, the spread (min..max), the ratio to the smallest depth
of the same thread count and KV type, and the least process CPU time per token (a guide on a
busy machine: with one thread it is the work itself). Timings only: nothing is asserted (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bitnet import _core


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-d", "--depths", type=_ints, default=[0, 1024, 4096])
    ap.add_argument("-n", "--n-gen", type=int, default=32)
    ap.add_argument("-t", "--threads", type=_ints, default=[os.cpu_count() or 1])
    ap.add_argument("-r", "--repetitions", type=int, default=3)
    ap.add_argument("--kv", default="f16", help="comma-separated KV types (f16, q8_0, f32)")
    ap.add_argument("--block-tokens", type=int, default=32)
    ap.add_argument("--n-batch", type=int, default=512, help="tokens per prefill step")
    ap.add_argument("--fill", choices=("copy", "prefill"), default="copy")
    args = ap.parse_args(argv)

    model = _core.Model(args.model)
    cfg = model.config
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit = "?"
    print(
        f"# {Path(args.model).name}: {cfg['n_layers']} layers, {cfg['n_heads']} heads, "
        f"{cfg['n_kv_heads']} kv heads, head_dim {cfg['head_dim']}; isa {model.kernel_isa}; "
        f"cpu {_core.cpu_info().get('brand', '?')}; commit {commit}"
    )
    rng = np.random.default_rng(0)
    max_depth = max(args.depths)
    n_positions = max_depth + args.n_gen
    bt = args.block_tokens
    table = np.arange((n_positions + bt - 1) // bt, dtype=np.int32)
    for kv in args.kv.split(","):
        cache = _core.KvCache(model, n_blocks=len(table), kv_type=kv, block_tokens=bt)
        prefill = _core.BatchDecoder(model, cache, args.n_batch, max(args.threads))
        start = time.perf_counter()
        fill = max_depth if args.fill == "prefill" else min(max_depth, bt)
        for pos in range(0, fill, args.n_batch):
            n = min(args.n_batch, fill - pos)
            tokens = rng.integers(0, cfg["n_vocab"], n, dtype=np.int32)
            prefill.step([(table, pos, tokens, 0)])
        if fill:
            elapsed = time.perf_counter() - start
            print(f"# kv {kv}: prefill of {fill} tokens {fill / elapsed:.1f} tok/s")
        if args.fill == "copy" and max_depth > bt:
            for b in range(1, len(table)):
                cache.copy_block(0, b, bt)
        del prefill
        print(
            f"# kv {kv}: {cache.bytes_per_token} bytes per token, resident {cache.resident_bytes / 2**20:.0f} MiB"
        )
        for t in args.threads:
            dec = _core.BatchDecoder(model, cache, args.n_batch, t)
            base = None
            for depth in sorted(args.depths):
                speeds = []
                cpu = []
                for _ in range(args.repetitions):
                    token = np.array([1], dtype=np.int32)
                    cpu_start = time.process_time()
                    start = time.perf_counter()
                    for i in range(args.n_gen):
                        logits = dec.step([(table, depth + i, token, 1)])
                        token[0] = int(np.argmax(logits[0]))
                    speeds.append(args.n_gen / (time.perf_counter() - start))
                    cpu.append((time.process_time() - cpu_start) / args.n_gen)
                med = statistics.median(speeds)
                base = med if depth == min(args.depths) else base
                ratio = med / base if base else float("nan")
                print(
                    f"kv {kv:5s} t {t:2d} tg{args.n_gen} @ d{depth:<6d} {med:7.2f} tok/s "
                    f"({min(speeds):.2f}..{max(speeds):.2f})  x{ratio:.2f} of d{min(args.depths)}  "
                    f"cpu {1e3 * min(cpu):.1f} ms/token (all threads, spinning included)"
                )
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
