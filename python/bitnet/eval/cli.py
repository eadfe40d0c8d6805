"""``bitnet perplexity``'s options and output (the command itself lives in bitnet.cli).

Three modes:

* perplexity, by bitnet's sliding window (default) or llama.cpp's chunks (``--method llama.cpp``),
  printed like llama-perplexity (``[1]x,[2]y,...`` and ``Final estimate: PPL = x +/- y``);
* ``--kl-divergence-base FILE`` alone: llama.cpp's method, also writing the log-probabilities
  to FILE (llama.cpp's format: ``llama-perplexity --kl-divergence`` reads it too);
* ``--kl-divergence``: compare with a base: FILE when ``--kl-divergence-base`` is given (written
  by either engine), else the same model on the exact path (f32 output layer, f32 KV cache,
  reference kernels) loaded next to it; prints llama-perplexity's statistics.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

from .kl import KlResult, kl_divergence
from .logits_file import LogitsReader
from .perplexity import LLAMA_CPP_DEFAULT_CTX, METHODS, perplexity_llama_cpp, perplexity_sliding

if TYPE_CHECKING:
    from ..model import Model

__all__ = ["add_perplexity_arguments", "run_perplexity"]

EXACT = {"output_type": "f32", "kv_cache": "f32", "isa": "ref"}


def add_perplexity_arguments(q: argparse.ArgumentParser) -> None:
    """Adds the method, engine and KL options to the perplexity subcommand."""
    q.add_argument(
        "--method",
        choices=METHODS,
        default="sliding",
        help="sliding: overlapping windows, every token scored (default); llama.cpp: "
        "llama-perplexity's chunks, second half of each scored (comparable numbers)",
    )
    q.add_argument(
        "--chunks", type=int, default=None, help="llama.cpp method: at most this many chunks"
    )
    e = q.add_argument_group("engine options (what the quality of each costs: docs/quality.md)")
    e.add_argument(
        "--kv-cache",
        choices=["f32", "f16", "q8_0"],
        default=None,
        help="KV-cache type (default: bitnet.load's, f16)",
    )
    e.add_argument(
        "--output-type",
        choices=["auto", "q8_0", "f32"],
        default=None,
        help="output layer (default: auto)",
    )
    e.add_argument(
        "--isa",
        default=None,
        help="kernel ISA (ref, avx2, avx512, avx512vnni, avx512vbmi, neon, dotprod, i8mm)",
    )
    e.add_argument(
        "--kernel",
        choices=["mad", "lut", "t3"],
        default=None,
        help="ternary kernels (t3: 1.67 bits per weight, avx512vbmi)",
    )
    k = q.add_argument_group("KL divergence (llama.cpp method)")
    k.add_argument(
        "--kl-divergence-base",
        metavar="FILE",
        default=None,
        help="without --kl-divergence: write the log-probabilities to FILE; with it: compare "
        "with FILE (written by bitnet or llama-perplexity)",
    )
    k.add_argument(
        "--kl-divergence",
        action="store_true",
        help="compare the token distributions with a base: --kl-divergence-base FILE, or else "
        "the same model on the exact path (f32 output, f32 KV cache, ref kernels)",
    )


def load_options(args: argparse.Namespace) -> dict[str, Any]:
    """The engine options of bitnet.load named on the command line."""
    options = {
        "kv_cache": args.kv_cache,
        "output_type": args.output_type,
        "isa": args.isa,
        "kernel": args.kernel,
    }
    return {k: v for k, v in options.items() if v is not None}


def run_perplexity(
    args: argparse.Namespace,
    text: str,
    load: Callable[..., Model],
    out: TextIO | None = None,
) -> int:
    """Runs the perplexity subcommand; load(**options) loads the model of args.

    Prints to out (default: sys.stdout at the time of the call).
    """
    out = out or sys.stdout
    llama = args.method == "llama.cpp" or args.kl_divergence or args.kl_divergence_base
    if llama and args.method == "sliding" and args.stride:
        raise ValueError("--stride applies to the sliding method, not to KL divergence")
    if not llama:
        if args.chunks is not None:
            raise ValueError("--chunks applies to --method llama.cpp")
        model = load(**load_options(args))
        r = perplexity_sliding(
            model, text, window=args.window, stride=args.stride, progress=not args.quiet
        )
        print(
            f"perplexity {r.ppl:.4f} over {r.n_tokens} tokens (window {r.window}, stride "
            f"{r.stride}), +/- {r.stderr:.4f} over {r.n_scored} scored tokens",
            file=out,
        )
        return 0
    window = args.window or LLAMA_CPP_DEFAULT_CTX
    if args.kl_divergence and args.kl_divergence_base:
        with LogitsReader(args.kl_divergence_base) as reader:
            window = reader.n_ctx  # the file's chunks decide, as in llama.cpp
    # The model needs a context of at least one chunk (llama.cpp runs past the training
    # context with a warning, and so do we).
    options = dict(load_options(args), n_ctx=max(args.ctx or 0, window))
    model = load(**options)
    if args.kl_divergence:
        base: Model | str = args.kl_divergence_base or load(**dict(options, **EXACT))
        kl = kl_divergence(
            model,
            None if isinstance(base, str) else text,
            base=base,
            n_ctx=window,
            n_chunks=args.chunks,
            progress=not args.quiet,
        )
        print_kl(kl, out)
        return 0
    res = perplexity_llama_cpp(
        model,
        text,
        n_ctx=window,
        n_chunks=args.chunks,
        progress=False,
        on_chunk=lambda i, ppl: print(f"[{i}]{ppl:.4f},", end="", file=out, flush=True),
        logits_file=args.kl_divergence_base,
    )
    print(file=out)
    print(
        f"Final estimate: PPL = {res.ppl:.4f} +/- {res.stderr:.5f} "
        f"({len(res.running_ppl)} chunks of {res.window} tokens, {res.n_scored} scored, "
        f"llama.cpp method)",
        file=out,
    )
    if args.kl_divergence_base:
        print(f"log-probabilities written to {args.kl_divergence_base}", file=out)
    return 0


def print_kl(r: KlResult, out: TextIO) -> None:
    """The statistics, laid out as llama-perplexity --kl-divergence prints them."""

    def p(line: str) -> None:
        print(line, file=out)

    p("====== Perplexity statistics ======")
    p(f"Mean PPL(Q)                   : {r.ppl:10.6f} ± {r.ppl_err:10.6f}")
    p(f"Mean PPL(base)                : {r.ppl_base:10.6f} ± {r.ppl_base_err:10.6f}")
    p(f"Cor(ln(PPL(Q)), ln(PPL(base))): {100 * r.ln_ppl_correlation:6.2f}%")
    p(f"Mean ln(PPL(Q)/PPL(base))     : {r.ln_ppl_ratio:10.6f} ± {r.ln_ppl_ratio_err:10.6f}")
    p(f"Mean PPL(Q)/PPL(base)         : {r.ppl_ratio:10.6f} ± {r.ppl_ratio_err:10.6f}")
    p("")
    p("====== KL divergence statistics ======")
    p(f"Mean    KLD: {r.kl_mean:10.6f} ± {r.kl_err:10.6f}")
    p(f"Maximum KLD: {r.kl_max:10.6f}")
    for q in (0.999, 0.99, 0.95, 0.9):
        p(f"{100 * q:4.1f}%   KLD: {r.kl_quantiles[q]:10.6f}")
    p(f"Median  KLD: {r.kl_quantiles[0.5]:10.6f}")
    for q in (0.1, 0.05, 0.01, 0.001):
        p(f"{100 * q:4.1f}%   KLD: {r.kl_quantiles[q]:10.6f}")
    p(f"Minimum KLD: {r.kl_min:10.6f}")
    p("")
    p("====== Token probability statistics ======")
    p(f"Mean    Δp: {100 * r.dp_mean:6.3f} ± {100 * r.dp_err:5.3f} %")
    p(f"Maximum Δp: {100 * r.dp_max:6.3f}%")
    for q in (0.999, 0.99, 0.95, 0.9, 0.75):
        p(f"{100 * q:4.1f}%   Δp: {100 * r.dp_quantiles[q]:6.3f}%")
    p(f"Median  Δp: {100 * r.dp_quantiles[0.5]:6.3f}%")
    for q in (0.25, 0.1, 0.05, 0.01, 0.001):
        p(f"{100 * q:4.1f}%   Δp: {100 * r.dp_quantiles[q]:6.3f}%")
    p(f"Minimum Δp: {100 * r.dp_min:6.3f}%")
    p(f"RMS Δp    : {100 * r.dp_rms:6.3f} ± {100 * r.dp_rms_err:5.3f} %")
    p(f"Same top p: {100 * r.same_top:6.3f} ± {100 * r.same_top_err:5.3f} %")
    p(f"({r.n_tokens} tokens compared)")
