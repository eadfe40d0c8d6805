"""``bitnet perplexity``: perplexity of a model on a text file, with a sliding window."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import (
    ArgumentError,
    Notes,
    add_model_options,
    add_output_options,
    int_at_least,
    load_model,
)

__all__ = ["add_parser", "run"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "perplexity",
        help="measure perplexity on a text file",
        description="Perplexity of the model on a text, with a sliding window (like "
        "llama.cpp's llama-perplexity). Lower is better; compare models on the same text.",
    )
    p.add_argument("file", help="a UTF-8 text file ('-': stdin)")
    add_model_options(p)
    p.add_argument(
        "--window",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="tokens per window (default 0: the context, -c)",
    )
    p.add_argument(
        "--stride",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="tokens between windows (default 0: half a window)",
    )
    add_output_options(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    notes = Notes(args)
    if args.file == "-":
        text = sys.stdin.read()
    else:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    model = load_model(args, notes)
    n_tokens = len(model.tokenize(text))
    window = min(args.window or model.n_ctx, model.n_ctx)
    stride = args.stride or max(1, window // 2)
    if window < 2 or stride > window:
        raise ArgumentError(
            "--stride" if stride > window else "--window",
            f"need a window of 2 tokens or more and a stride no larger (got window {window}, "
            f"stride {stride})",
        )
    ppl = model.perplexity(text, window=window, stride=stride, progress=not notes.quiet)
    print(f"perplexity {ppl:.4f} over {n_tokens} tokens (window {window}, stride {stride})")
    return 0
