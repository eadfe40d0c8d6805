"""Interleaved A/B timing of decoding and prompt processing between kernel configurations.

Loads every configuration once, then alternates short timed runs between them (round robin,
``--rounds`` times) so that a shared machine's drift hits all of them alike; prints per
configuration the median and min-max of tokens/s and the bytes read per token. Reports; never
asserts (docs/benchmarks.md, "A/B runs").

    python bench/ab_decode.py MODEL.gguf --config avx2:mad --config avx512vnni:mad \\
        --config avx512vbmi:t3 --threads 1,2 --rounds 5 --tg 32 --pp 128
    # a config is isa:kernel[:output_type[:topk]], e.g. avx512vbmi:t3:q8_0:1 (exact top-1 output)
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, field

import numpy as np

from bitnet import _core


@dataclass
class Config:
    """One configuration under test and its samples (tokens/s) per (test, threads)."""

    name: str
    isa: str
    kernel: str
    output_type: str
    topk: int
    model: _core.Model | None = None
    samples: dict[tuple[str, int], list[float]] = field(default_factory=dict)


def _parse(spec: str) -> Config:
    parts = spec.split(":")
    isa, kernel = parts[0], parts[1] if len(parts) > 1 else "mad"
    output_type = parts[2] if len(parts) > 2 else "q8_0"
    topk = int(parts[3]) if len(parts) > 3 else 0
    return Config(spec, isa, kernel, output_type, topk)


def _decode(cfg: Config, threads: int, n_tg: int, rng: np.random.Generator) -> float:
    """tokens/s of n_tg single-token steps after a 16-token prompt."""
    assert cfg.model is not None
    n_vocab = cfg.model.config["n_vocab"]
    cache = _core.KvCache(cfg.model, n_blocks=(n_tg + 16) // 32 + 2, block_tokens=32)
    dec = _core.BatchDecoder(cfg.model, cache, n_batch=64, n_threads=threads)
    table = np.arange(cache.n_blocks, dtype=np.int32)
    prompt = rng.integers(0, n_vocab, 16).astype(np.int32)
    dec.step([(table, 0, prompt, 1)])
    start = time.perf_counter()
    for i in range(n_tg):
        tok = np.asarray([int(rng.integers(0, n_vocab))], np.int32)
        seq: tuple = (table, 16 + i, tok, 1)
        dec.step([seq if cfg.topk == 0 else (*seq, cfg.topk)])
    return n_tg / (time.perf_counter() - start)


def _prompt(cfg: Config, threads: int, n_pp: int, rng: np.random.Generator) -> float:
    assert cfg.model is not None
    cache = _core.KvCache(cfg.model, n_blocks=n_pp // 32 + 2, block_tokens=32)
    dec = _core.BatchDecoder(cfg.model, cache, n_batch=n_pp, n_threads=threads)
    table = np.arange(cache.n_blocks, dtype=np.int32)
    ids = rng.integers(0, cfg.model.config["n_vocab"], n_pp).astype(np.int32)
    start = time.perf_counter()
    dec.step([(table, 0, ids, 1)])
    return n_pp / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("model")
    p.add_argument("--config", action="append", required=True)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--tg", type=int, default=32, help="decoded tokens per sample (0: skip)")
    p.add_argument("--pp", type=int, default=128, help="prompt tokens per sample (0: skip)")
    args = p.parse_args()
    configs = [_parse(s) for s in args.config]
    for cfg in configs:
        cfg.model = _core.Model(args.model, cfg.output_type, cfg.isa, cfg.kernel, cfg.topk > 0)
    threads = [int(t) for t in args.threads.split(",")]
    rng = np.random.default_rng(0)
    for _ in range(args.rounds):
        for th in threads:
            for cfg in configs:
                if args.tg:
                    cfg.samples.setdefault(("tg", th), []).append(_decode(cfg, th, args.tg, rng))
                if args.pp:
                    cfg.samples.setdefault(("pp", th), []).append(_prompt(cfg, th, args.pp, rng))
    print(f"model {args.model}; {args.rounds} interleaved rounds; tg{args.tg} pp{args.pp}")
    print("| config | bytes/token (MB) | test | threads | median t/s | min-max |")
    print("|---|---|---|---|---|---|")
    for cfg in configs:
        assert cfg.model is not None
        mb = cfg.model.bytes_per_token / 1e6
        if cfg.topk:
            info = _core.output_topk_info(cfg.model)
            mb += (info["pass_bytes"] - info["q8_bytes"]) / 1e6  # plus the exact rows (not counted)
        for (test, th), xs in sorted(cfg.samples.items()):
            print(
                f"| {cfg.name} | {mb:.0f} | {test} | {th} | {statistics.median(xs):.2f} | "
                f"{min(xs):.2f}-{max(xs):.2f} |"
            )


if __name__ == "__main__":
    main()
