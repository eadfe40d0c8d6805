#!/usr/bin/env python3
"""What each engine option costs in quality: perplexity and KL divergence against the exact path.

    python bench/quality.py MODEL.gguf TEXT.txt [--window 256] [--chunks N] [-o md|json]

The exact path is the same file with a float32 output layer, a float32 KV cache and the scalar
reference kernels (``output_type="f32", kv_cache="f32", isa="ref"``). Each variant changes one
option from it (and "default" is what ``bitnet.load`` picks on this machine). For every variant
the script prints llama.cpp-method perplexity (chunks of --window tokens, second half scored),
its ratio to the exact path's, and llama-perplexity's KL statistics against the exact path: mean
and 99.9th percentile KL, top-1 agreement and RMS of the next-token probability change.

The exact path's logits are computed once and kept in memory (chunks x window/2 x n_vocab
float32: fine for small vocabularies; for 128k-token vocabularies pass --chunks).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import bitnet
from bitnet.eval import KlStats, scored_logits
from bitnet.eval.perplexity import llama_cpp_chunks

EXACT: dict[str, Any] = {"output_type": "f32", "kv_cache": "f32", "isa": "ref"}
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("exact (f32 output, f32 KV, ref)", {}),
    ("output q8_0", {"output_type": "q8_0"}),
    ("KV cache f16", {"kv_cache": "f16"}),
    ("KV cache q8_0", {"kv_cache": "q8_0"}),
    ("kernels mad (best ISA)", {"isa": None, "kernel": "mad"}),
    ("kernels lut (best ISA)", {"isa": None, "kernel": "lut"}),
    ("kernels t3 (best ISA)", {"isa": None, "kernel": "t3"}),
    ("default (bitnet.load)", {"output_type": "auto", "kv_cache": None, "isa": None}),
]


def measure(path: str, text: str, window: int, chunks: int | None) -> dict[str, Any]:
    exact = bitnet.load(path, n_ctx=window, **EXACT)
    ids = exact.tokenize(text, special=False)
    n_chunks = llama_cpp_chunks(len(ids), window, chunks)
    base = [scored_logits(exact, ids, window, c) for c in range(n_chunks)]
    rows: list[dict[str, Any]] = []
    for name, change in VARIANTS:
        options = {k: v for k, v in {**EXACT, **change}.items() if v is not None}
        try:
            model = bitnet.load(path, n_ctx=window, **options)
        except bitnet.BitnetError as e:  # an option this build or model does not have
            rows.append({"variant": name, "skipped": str(e).splitlines()[0]})
            continue
        stats = KlStats()
        t0 = time.perf_counter()
        for c in range(n_chunks):
            logits, targets = scored_logits(model, ids, window, c)
            stats.add_logits(logits, base[c][0], targets)
        r = stats.result()
        rows.append(
            {
                "variant": name,
                "options": options,
                "kernels": model.kernels,
                "ppl": r.ppl,
                "ppl_err": r.ppl_err,
                "ppl_ratio": r.ppl_ratio,
                "kl_mean": r.kl_mean,
                "kl_p999": r.kl_quantiles[0.999],
                "kl_max": r.kl_max,
                "same_top": r.same_top,
                "dp_rms": r.dp_rms,
                "seconds": time.perf_counter() - t0,
            }
        )
    return {
        "model": Path(path).name,
        "n_tokens": len(ids),
        "window": window,
        "chunks": n_chunks,
        "scored": n_chunks * (window - 1 - window // 2),
        "rows": rows,
    }


def to_markdown(report: dict[str, Any]) -> str:
    head = (
        f"{report['model']}: {report['chunks']} chunks of {report['window']} tokens, "
        f"{report['scored']} scored"
    )
    lines = [
        head,
        "",
        "| variant | PPL | PPL / exact | mean KL | KL 99.9% | same top-1 | RMS Δp |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        if "skipped" in r:
            lines.append(f"| {r['variant']} | n/a: {r['skipped']} | | | | | |")
            continue
        lines.append(
            f"| {r['variant']} | {r['ppl']:.4f} ± {r['ppl_err']:.4f} | {r['ppl_ratio']:.6f} "
            f"| {r['kl_mean']:.3g} | {r['kl_p999']:.3g} | {100 * r['same_top']:.2f}% "
            f"| {100 * r['dp_rms']:.3f}% |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a .gguf file")
    p.add_argument("text", help="a UTF-8 text file")
    p.add_argument("--window", type=int, default=256, help="tokens per chunk (default 256)")
    p.add_argument("--chunks", type=int, default=None, help="at most this many chunks")
    p.add_argument("-o", "--output", choices=["md", "json"], default="md")
    args = p.parse_args(argv)
    text = Path(args.text).read_text(encoding="utf-8")
    report = measure(args.model, text, args.window, args.chunks)
    out = json.dumps(report, indent=1) + "\n" if args.output == "json" else to_markdown(report)
    sys.stdout.write(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
