"""``bitnet perplexity``: perplexity of a model on a text file (bitnet's sliding window or
llama.cpp's method) and KL divergence between engine options; the options and output are
:mod:`bitnet.eval.cli`'s."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..eval.cli import add_perplexity_arguments, run_perplexity
from ._common import (
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
        description="Perplexity of the model on a text: bitnet's sliding window (every token "
        "scored) or llama.cpp's method (--method llama.cpp, numbers comparable with "
        "llama-perplexity), and KL divergence between engine options (docs/quality.md). Lower "
        "is better; compare models on the same text.",
    )
    p.add_argument("file", help="a UTF-8 text file ('-': stdin)")
    add_model_options(p)
    p.add_argument(
        "--window",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="tokens per window (default 0: the context, -c) or per chunk (llama.cpp method, "
        "default 512)",
    )
    p.add_argument(
        "--stride",
        type=int_at_least(0),
        default=0,
        metavar="N",
        help="tokens between windows (default 0: half a window)",
    )
    add_output_options(p)
    add_perplexity_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    notes = Notes(args)
    if args.file == "-":
        text = sys.stdin.read()
    else:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    return run_perplexity(args, text, lambda **options: load_model(args, notes, **options))
