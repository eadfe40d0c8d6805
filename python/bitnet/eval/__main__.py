"""``python -m bitnet.eval ARGS`` = ``lm-eval ARGS`` with the ``bitnet`` backend registered.

``--model bitnet`` is added when ARGS name no model, so
``python -m bitnet.eval --model_args model=m.gguf --tasks arc_easy`` is enough. Every other
argument is the harness's own (``lm-eval run --help``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]


def harness_argv(args: Sequence[str]) -> list[str]:
    """The harness's command line for ARGS: ``--model bitnet`` added to a run without one."""
    out = list(args)
    runs = not out or out[0] == "run" or out[0].startswith("-")
    has_model = any(a == "--model" or a.startswith("--model=") for a in out)
    if runs and not has_model and not any(a in ("-h", "--help") for a in out):
        at = 1 if out and out[0] == "run" else 0
        out[at:at] = ["--model", "bitnet"]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the harness's command line; returns its exit status."""
    try:
        from lm_eval.__main__ import cli_evaluate
    except ImportError:
        print(
            "bitnet eval: lm-evaluation-harness is not installed: pip install 'bitnet[eval]'",
            file=sys.stderr,
        )
        return 1
    from . import harness  # noqa: F401  (registers the backend)

    args = harness_argv(sys.argv[1:] if argv is None else argv)
    saved = sys.argv
    sys.argv = ["lm-eval", *args]  # the harness parses sys.argv itself
    try:
        cli_evaluate()
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
