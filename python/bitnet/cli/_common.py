"""What the commands of ``bitnet`` share: options, model loading, messages, flag names.

Conventions (llama.cpp's and Ollama's, kept the same in every command):

* ``-m/--model MODEL`` names the model everywhere, with one rule: a .gguf file, a hub repository
  ("owner/repo", "owner/repo/file.gguf") or a registry name; left out, the bundled model.
* ``-t/--threads``, ``-c/--ctx``, ``-n/--max-tokens``, ``-s/--seed``, ``--temp`` as in llama.cpp.
* Results go to stdout; progress, notices and timings to stderr (``-q`` silences them,
  ``-v`` adds detail). Argument errors print the command's usage and exit 2; other errors are
  one line, ``bitnet: error: ...``, exit 1; Ctrl-C exits 130.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

from ..engine.params import SamplingParams
from ..errors import ParameterError

__all__ = [
    "FLAGS",
    "ArgumentError",
    "Notes",
    "add_model_options",
    "add_output_options",
    "add_sampling_options",
    "argument_error",
    "load_model",
    "model_name",
    "sampling_params",
]

# Python parameter -> the flag that sets it, so that errors name what the user typed.
FLAGS = {
    "n_ctx": "-c/--ctx",
    "n_threads": "-t/--threads",
    "max_tokens": "-n/--max-tokens",
    "temperature": "--temp",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "min_p": "--min-p",
    "repeat_penalty": "--repeat-penalty",
    "repeat_last_n": "--repeat-last-n",
    "presence_penalty": "--presence-penalty",
    "frequency_penalty": "--frequency-penalty",
    "seed": "-s/--seed",
    "stop": "--stop",
    "revision": "--revision",
    "weight_type": "--weight-type",
    "embedding_type": "--embedding-type",
    "overwrite": "--overwrite",
    "window": "--window",
    "stride": "--stride",
}


class ArgumentError(Exception):
    """A flag's value is wrong: reported with the command's usage, exit status 2."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(f"argument {flag}: {message}")


def argument_error(e: ParameterError) -> ArgumentError | None:
    """The ArgumentError naming the flag behind a ParameterError, when a flag sets it."""
    flag = FLAGS.get(e.param)
    if flag is None:
        return None
    message = str(e)
    message = re.sub(rf"^{re.escape(e.param)}\b\s*", "", message) or message
    return ArgumentError(flag, message.replace(f"{e.param}=", f"{flag} "))


def text_of(value: str | bytes) -> str:
    """Text as the user gave it, with bytes that are not UTF-8 shown as U+FFFD.

    Command-line arguments and terminal input reach Python with undecodable bytes as lone
    surrogates (PEP 383); they are turned back into bytes and decoded leniently, as llama.cpp
    takes any bytes, so a stray byte in a prompt never ends in a tokenizer error.
    """
    if isinstance(value, bytes):
        data = value
    else:
        try:
            data = value.encode("utf-8", errors="surrogateescape")
        except UnicodeEncodeError:  # a surrogate that is not an escaped byte
            data = value.encode("utf-8", errors="replace")
    return data.decode("utf-8", errors="replace")


# -- argparse value types ---------------------------------------------------------------------


def int_at_least(low: int, hint: str = "") -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {low} or more, got {value}{hint}")
        return value

    parse.__name__ = "integer"
    return parse


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


# -- option groups -----------------------------------------------------------------------------


def add_model_options(p: argparse.ArgumentParser, *, runs: bool = True) -> None:
    """-m (one rule for every command), --revision, and for commands that run it -c and -t."""
    p.add_argument(
        "-m",
        "--model",
        default=None,
        metavar="MODEL",
        help="a .gguf file, a hub repository 'owner/repo' or a name from `bitnet models --known` "
        "(default: the model bundled with bitnet)",
    )
    p.add_argument("--revision", default=None, help="hub branch, tag or commit of -m")
    if runs:
        p.add_argument(
            "-c",
            "--ctx",
            type=int_at_least(0),
            default=0,
            metavar="N",
            help="context length in tokens (default 0: the model's training context)",
        )
        p.add_argument(
            "-t",
            "--threads",
            type=int_at_least(1, " (leave it out for the default; the temperature is --temp)"),
            default=None,
            metavar="N",
            help="threads per forward pass (default: the physical cores)",
        )


def add_output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument(
        "-v", "--verbose", action="store_true", help="more detail on stderr (model, timings)"
    )
    g.add_argument(
        "-q", "--quiet", action="store_true", help="nothing on stderr but errors and warnings"
    )


def add_sampling_options(p: argparse.ArgumentParser, max_tokens: int) -> None:
    g = p.add_argument_group("sampling (the same options as the Python API)")
    g.add_argument(
        "-n",
        "--max-tokens",
        type=int_at_least(0),
        default=None,
        metavar="N",
        help=f"most tokens to generate (default {max_tokens})",
    )
    g.add_argument(
        "--temp",
        "--temperature",
        dest="temperature",
        type=number,
        default=0.8,
        metavar="T",
        help="randomness; 0 = always the likeliest token (default 0.8)",
    )
    g.add_argument(
        "--top-k",
        type=int,
        default=40,
        metavar="K",
        help="sample among the K likeliest tokens, 0 = all (default 40)",
    )
    g.add_argument(
        "--top-p",
        type=number,
        default=0.95,
        metavar="P",
        help="sample among the likeliest tokens covering probability P, 1 = all (default 0.95)",
    )
    g.add_argument(
        "--min-p",
        type=number,
        default=0.05,
        metavar="P",
        help="drop tokens below P x the likeliest one's probability (default 0.05)",
    )
    g.add_argument(
        "--repeat-penalty",
        type=number,
        default=1.0,
        metavar="X",
        help="penalize recently seen tokens, 1 = off (default 1.0)",
    )
    g.add_argument(
        "--repeat-last-n",
        type=int,
        default=64,
        metavar="N",
        help="tokens the repeat penalty looks back on (default 64)",
    )
    g.add_argument(
        "--presence-penalty",
        type=number,
        default=0.0,
        metavar="X",
        help="OpenAI's presence penalty, -2 to 2 (default 0)",
    )
    g.add_argument(
        "--frequency-penalty",
        type=number,
        default=0.0,
        metavar="X",
        help="OpenAI's frequency penalty, -2 to 2 (default 0)",
    )
    g.add_argument(
        "-s",
        "--seed",
        type=int,
        default=None,
        help="random seed, for repeatable output (default: a fresh one each run)",
    )
    g.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TEXT",
        help="stop when TEXT appears (not printed); repeat the flag for several strings",
    )
    g.add_argument(
        "--exact-topk",
        action="store_true",
        help="read about half of the output layer when sampling with --top-k > 0 or --temp 0 "
        "(identical tokens; pays on trained models: docs/usage.md)",
    )
    p.set_defaults(default_max_tokens=max_tokens)


def sampling_params(args: argparse.Namespace) -> SamplingParams:
    """The request options of the sampling flags (ArgumentError naming a flag that is wrong)."""
    try:
        return SamplingParams(
            max_tokens=args.default_max_tokens if args.max_tokens is None else args.max_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            min_p=args.min_p,
            repeat_penalty=args.repeat_penalty,
            repeat_last_n=args.repeat_last_n,
            presence_penalty=args.presence_penalty,
            frequency_penalty=args.frequency_penalty,
            seed=args.seed,
            stop=tuple(args.stop),
        )
    except ParameterError as e:
        mapped = argument_error(e)
        raise (mapped or e) from None


# -- models ---------------------------------------------------------------------------------------


def model_name(args: argparse.Namespace) -> str:
    """What -m names, the bundled model when it is left out (ArgumentError for a --revision
    that cannot apply)."""
    from .. import hub
    from ..api import default_model_path

    name = args.model if args.model is not None else os.fspath(default_model_path())
    if args.revision is not None and not hub.is_hub_name(name):
        raise ArgumentError("--revision", f"applies to hub models, but {name!r} is a local file")
    return name


class Notes:
    """Notices and timings on stderr, as -q/-v ask."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.quiet = bool(getattr(args, "quiet", False))
        self.verbose = bool(getattr(args, "verbose", False)) and not self.quiet

    def say(self, text: str) -> None:
        """A notice (hidden by -q)."""
        if not self.quiet:
            print(f"bitnet: {text}", file=sys.stderr, flush=True)

    def detail(self, text: str) -> None:
        """Detail shown with -v only."""
        if self.verbose:
            print(f"bitnet: {text}", file=sys.stderr, flush=True)

    def warn(self, text: str) -> None:
        """A warning (shown even with -q)."""
        print(f"bitnet: warning: {text}", file=sys.stderr, flush=True)


def load_model(args: argparse.Namespace, notes: Notes, **options: Any) -> Any:
    """bitnet.load with the model flags (options add to or override them); warns when the
    context exceeds the training context."""
    from ..model import load

    name = model_name(args)
    if getattr(args, "exact_topk", False) is True:  # generate and chat's --exact-topk
        options.setdefault("exact_topk", True)
    start = time.perf_counter()
    try:
        model = load(
            name,
            revision=args.revision,
            progress=not notes.quiet,
            **{"n_ctx": args.ctx, "n_threads": args.threads, **options},
        )
    except ParameterError as e:
        mapped = argument_error(e)
        raise (mapped or e) from None
    trained = int(model.config.get("n_ctx_train") or 0)
    if args.ctx and trained and model.n_ctx > trained:
        notes.warn(
            f"-c/--ctx {model.n_ctx} is above the {trained} tokens this model was trained on; "
            "text beyond them is usually poor"
        )
    kernels = model.kernels
    notes.detail(
        f"loaded {model.path} in {time.perf_counter() - start:.2f} s: context {model.n_ctx} "
        f"tokens (trained on {trained or '?'}), {model.n_threads} threads, kernels "
        f"{kernels['isa']}, output layer {kernels['output']}"
    )
    return model
