"""The ``bitnet`` command line (also ``python -m bitnet``).

Each command lives in a module that adds its parser to the subcommands and runs it:
``add_parser(sub)`` returns the parser (or a list of them), each with ``func`` set, or the
module has ``run(args) -> int`` for the one parser it returns. Commands provided by other parts
of the package plug in the same way through :data:`COMMAND_MODULES` (``bitnet.server.cli`` adds
``serve``; a build without the server simply has no such command).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from ..errors import BitnetError, ContextLengthError, ParameterError
from ._common import ArgumentError, argument_error

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

COMMAND_MODULES = (
    "bitnet.cli.generate",
    "bitnet.cli.chat",
    "bitnet.server.cli",  # serve
    "bitnet.cli.perplexity",
    "bitnet.cli.evaluate",  # eval
    "bitnet.cli.models",  # pull, models, rm, info, convert
    "bitnet.bench",  # bench
)

_EPILOG = """\
examples:
  bitnet generate "In the beginning"                      (the bundled model, offline)
  bitnet chat --system "You are concise."
  bitnet pull bitnet-2b4t-gguf && bitnet generate -m bitnet-2b4t-gguf "The capital of France is"
  bitnet models                                           (what is cached; --known: the registry)
  bitnet convert microsoft/bitnet-b1.58-2B-4T 2b4t.gguf
  bitnet perplexity -m 2b4t.gguf wiki.test.raw --window 512
  bitnet perplexity -m 2b4t.gguf wiki.test.raw --method llama.cpp --kl-divergence
  bitnet eval --model_args model=2b4t.gguf --tasks arc_easy,hellaswag
  bitnet bench -m 2b4t.gguf -p 128 -n 64 -t 1,2 -r 3

MODEL (-m, the same in every command) is a .gguf file, a Hugging Face repository ("owner/repo":
downloaded on first use, converted once if it is a checkpoint, then used from the cache without
the network), or a short name from `bitnet models --known`. Without -m, commands use the small
model bundled with bitnet. `bitnet COMMAND --help` describes each command.
"""


def _version() -> str:
    from .. import __version__

    return f"bitnet {__version__}"


def _plugin(name: str) -> Any:
    """The command module `name`, or None when this build does not have it."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name is not None and name.startswith(e.name):
            return None  # the module (or its package) is not part of this build
        raise


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bitnet`` command."""
    p = argparse.ArgumentParser(
        prog="bitnet",
        description="Run ternary (1.58-bit) and binary BitNet language models on the CPU.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = _plugin(name)
        if module is None:
            continue
        made = module.add_parser(sub)
        for parser in made if isinstance(made, list) else [made]:
            if parser.get_default("func") is None:
                parser.set_defaults(func=module.run)
            parser.set_defaults(parser_=parser)
    return p


def _usage_error(args: argparse.Namespace | None, root: argparse.ArgumentParser, msg: str) -> int:
    parser = getattr(args, "parser_", None) or root
    try:
        parser.error(msg)  # prints the command's usage and the message, exits 2
    except SystemExit as e:
        return int(e.code or 2)
    return 2


def _error(e: BaseException) -> int:
    text = str(e).strip()
    message = text.splitlines()[0] if text else type(e).__name__
    print(f"bitnet: error: {message}", file=sys.stderr, flush=True)
    return 1


def _silence_stdout() -> None:
    """After a closed pipe: later writes, and the flush at exit, go nowhere."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status.

    0: success, or the reader of stdout went away (``bitnet generate ... | head``); 1: an
    error, one line on stderr (``bitnet: error: ...``); 2: a wrong argument, with the
    command's usage; 130: interrupted (Ctrl-C).
    """
    with contextlib.suppress(AttributeError, ValueError):
        sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["eval"]:  # everything after it is lm-eval's, options first included
        from .evaluate import run_harness

        return run_harness(argv[1:])
    root = build_parser()
    args: argparse.Namespace | None = None
    try:
        args, extra = root.parse_known_args(argv)
        if extra:
            hint = (
                " (quote a prompt of several words)"
                if args.command == "generate" and not extra[0].startswith("-")
                else ""
            )
            return _usage_error(args, root, f"unrecognized arguments: {' '.join(extra)}{hint}")
        status = int(args.func(args))
        sys.stdout.flush()  # here, where a closed pipe is handled, not at exit
        return status
    except SystemExit as e:  # argparse: --help, --version, or a usage error
        return int(e.code) if isinstance(e.code, int) else (0 if e.code is None else 2)
    except ArgumentError as e:
        return _usage_error(args, root, str(e))
    except ParameterError as e:
        mapped = argument_error(e)
        return _usage_error(args, root, str(mapped)) if mapped else _error(e)
    except ContextLengthError as e:
        return _error(
            BitnetError(
                f"the prompt has {e.n_prompt} tokens but the context holds {e.n_ctx}; shorten "
                "it, or raise -c/--ctx"
            )
        )
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130
    except (BitnetError, OSError, ValueError, TypeError, UnicodeError) as e:
        return _error(e)
