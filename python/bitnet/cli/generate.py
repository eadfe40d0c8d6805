"""``bitnet generate``: continue a prompt, streaming the text, then say why and how fast."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import (
    ArgumentError,
    Notes,
    add_model_options,
    add_output_options,
    add_sampling_options,
    load_model,
    sampling_params,
    text_of,
)

__all__ = ["add_parser", "finish_notice", "run", "timings_line"]


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "generate",
        help="continue a prompt, streaming the text",
        description="Continue a prompt, printing the text as it is generated. Timings and the "
        "reason generation stopped go to stderr.",
    )
    p.add_argument(
        "prompt",
        nargs="?",
        default=None,
        help="the prompt; '-' or left out: read from stdin (end it with Ctrl-D on a terminal)",
    )
    add_model_options(p)
    add_sampling_options(p, 256)
    add_output_options(p)
    p.set_defaults(func=run)
    return p


def _read_prompt(args: argparse.Namespace, notes: Notes) -> str:
    if args.prompt not in (None, "-"):
        return text_of(args.prompt)
    if sys.stdin is None:
        raise ArgumentError("prompt", "no prompt given and no stdin to read it from")
    if sys.stdin.isatty():
        notes.say(
            "reading the prompt from the terminal: type it, then Ctrl-D (or give it as an "
            'argument: bitnet generate "text")'
        )
    stdin = getattr(sys.stdin, "buffer", None)
    return text_of(stdin.read()) if stdin is not None else text_of(sys.stdin.read())


def timings_line(completion: Any) -> str:
    """'prompt 5 tokens, 182.3 tokens/s; generated 64 tokens, 113.8 tokens/s' (llama.cpp's
    split: the prompt pass, then every generated token after the first)."""
    t = completion.timings
    if t.prompt_tokens_computed == 0:
        prompt = f"prompt {completion.prompt_tokens} tokens (all cached)"
    else:
        prompt = (
            f"prompt {completion.prompt_tokens} tokens, {t.prompt_tokens_per_s:.1f} tokens/s"
            + (
                f" ({t.prompt_tokens_computed} computed)"
                if t.prompt_tokens_computed != completion.prompt_tokens
                else ""
            )
        )
    rate = completion.generation_tokens_per_s
    gen = f"generated {completion.completion_tokens} tokens" + (
        f", {rate:.1f} tokens/s" if rate > 0 else ""
    )
    return f"{prompt}; {gen}"


def finish_notice(
    completion: Any, *, n_ctx: int, trained: int, max_tokens_given: bool
) -> str | None:
    """Why generation ended, when the user may not expect it (None otherwise)."""
    reason = completion.finish_reason
    if reason == "context":
        more = f" (the model was trained on {trained})" if trained else ""
        return (
            f"stopped: the context is full ({n_ctx} tokens: {completion.prompt_tokens} of "
            f"prompt, {completion.completion_tokens} generated); -c/--ctx sets a larger one{more}"
        )
    if reason == "length" and not max_tokens_given:
        return (
            f"stopped after {completion.completion_tokens} tokens, the default limit; "
            "-n/--max-tokens sets another"
        )
    return None


def run(args: argparse.Namespace) -> int:
    notes = Notes(args)
    params = sampling_params(args)  # flags are checked before the model is loaded
    prompt = _read_prompt(args, notes)
    model = load_model(args, notes)
    handle = model.engine.submit(prompt, params)
    out = sys.stdout
    last = ""
    try:
        for chunk in handle:
            if chunk.text:
                out.write(chunk.text)
                out.flush()
                last = chunk.text
        completion = handle.result()
    finally:
        handle.cancel()  # a no-op once finished; frees the sequence on Ctrl-C or a closed pipe
    if not last.endswith("\n"):
        out.write("\n")
        out.flush()
    trained = int(model.config.get("n_ctx_train") or 0)
    notice = finish_notice(
        completion, n_ctx=model.n_ctx, trained=trained, max_tokens_given=args.max_tokens is not None
    )
    if notice:
        notes.say(notice)
    notes.say(timings_line(completion))
    t = completion.timings
    notes.detail(
        f"finish reason {completion.finish_reason}; queued {t.queued_s * 1e3:.0f} ms, prompt "
        f"{t.prompt_s * 1e3:.0f} ms, generation {t.generate_s * 1e3:.0f} ms"
    )
    return 0
