"""``bitnet eval``: lm-evaluation-harness's command line with the bitnet backend.

Everything after ``eval`` is the harness's (options included), so :func:`bitnet.cli.main` hands
it to :mod:`bitnet.eval` before its own parser runs; the parser here only lists the command in
``bitnet --help``.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

__all__ = ["add_parser", "run", "run_harness"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "eval",
        help="run lm-evaluation-harness tasks (needs bitnet[eval])",
        description="lm-eval's command line with the bitnet backend (--model bitnet is added); "
        "e.g. bitnet eval --model_args model=m.gguf --tasks arc_easy. `bitnet eval --help` "
        "shows lm-eval's options.",
        add_help=False,
    )
    p.add_argument("harness_args", nargs=argparse.REMAINDER, help="lm-eval's arguments")
    p.set_defaults(func=run)
    return p


def run_harness(argv: Sequence[str]) -> int:
    """Runs lm-eval with ARGV (the arguments after ``eval``); returns its exit status."""
    from ..eval.__main__ import main as eval_main

    return eval_main(list(argv))


def run(args: argparse.Namespace) -> int:
    return run_harness(args.harness_args)
