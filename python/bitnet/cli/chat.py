"""``bitnet chat``: a conversation in the terminal that keeps fitting its context.

When the conversation outgrows the context, the oldest exchanges are dropped (the system prompt
stays), as llama.cpp's context shift and Ollama do, and a notice says so; room is kept for a
reply of up to half the context (or -n tokens, if fewer). A model without a chat template of
its own gets :data:`bitnet.chat.DEFAULT_CHAT_TEMPLATE`, so every model can chat.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
from typing import Any

from ..chat import DEFAULT_CHAT_STOP
from ..engine.params import SamplingParams
from ._common import (
    Notes,
    add_model_options,
    add_output_options,
    add_sampling_options,
    load_model,
    sampling_params,
    text_of,
)
from .generate import finish_notice, timings_line

__all__ = ["Conversation", "add_parser", "run"]

HELP = """commands:
  /reset     forget the conversation (keeps the system prompt)
  /history   show the conversation so far
  /help      show this help
  /exit      quit (also /quit or Ctrl-D)
Ctrl-C while the model writes stops the reply."""


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "chat",
        help="talk to a model in the terminal",
        description="Interactive chat with the model's chat template (a plain role-tagged "
        "default for models without one). Type /help inside for commands. When the "
        "conversation outgrows the context, the oldest exchanges are dropped.",
    )
    add_model_options(p)
    p.add_argument("--system", default=None, metavar="TEXT", help="a system prompt")
    add_sampling_options(p, 512)
    add_output_options(p)
    p.set_defaults(func=run)
    return p


@dataclasses.dataclass
class Conversation:
    """The system prompt and the exchanges after it, fitted into a context on each turn."""

    system: list[dict[str, str]]
    turns: list[dict[str, str]] = dataclasses.field(default_factory=list)

    def messages(self, user: str | None = None) -> list[dict[str, str]]:
        extra = [{"role": "user", "content": user}] if user is not None else []
        return [*self.system, *self.turns, *extra]

    def drop_oldest(self) -> int:
        """Drops the oldest exchange (a user message and its reply); returns messages dropped."""
        n = 2 if len(self.turns) >= 2 and self.turns[1]["role"] == "assistant" else 1
        del self.turns[:n]
        return n

    def fit(self, model: Any, user: str, reserve: int) -> tuple[list[int], int]:
        """(prompt token ids with the new user message, messages dropped to make them fit).

        Drops the oldest exchanges until prompt + reserve fits the context, or only the system
        prompt and the new message are left (then the reply gets whatever room remains).
        """
        dropped = 0
        while True:
            ids = model.tokenize(model.apply_chat_template(self.messages(user)))
            if len(ids) + reserve <= model.n_ctx or not self.turns:
                return ids, dropped
            dropped += self.drop_oldest()


@dataclasses.dataclass
class _Totals:
    replies: int = 0
    prompt_tokens: int = 0
    prompt_s: float = 0.0
    generated: int = 0
    generate_s: float = 0.0

    def add(self, completion: Any) -> None:
        t = completion.timings
        self.replies += 1
        self.prompt_tokens += t.prompt_tokens_computed
        self.prompt_s += t.prompt_s
        self.generated += max(0, completion.completion_tokens - 1)
        self.generate_s += t.generate_s

    def line(self) -> str:
        pp = self.prompt_tokens / self.prompt_s if self.prompt_s > 0 else 0.0
        tg = self.generated / self.generate_s if self.generate_s > 0 else 0.0
        return (
            f"{self.replies} repl{'y' if self.replies == 1 else 'ies'}: prompt "
            f"{self.prompt_tokens} tokens computed, {pp:.1f} tokens/s; generated "
            f"{self.generated} tokens after the first of each reply, {tg:.1f} tokens/s"
        )


def _reply(model: Any, ids: list[int], params: SamplingParams) -> tuple[str, Any | None]:
    """Streams one reply to stdout; (its text, the Completion, or None when interrupted)."""
    handle = model.engine.submit(ids, params)
    pieces: list[str] = []
    started = False
    try:
        for chunk in handle:
            text = chunk.text
            if not started:  # a reply opens after "Assistant:" or a SentencePiece space
                text = text.lstrip()
                started = bool(text)
            if text:
                sys.stdout.write(text)
                sys.stdout.flush()
                pieces.append(text)
        return "".join(pieces), handle.result()
    except KeyboardInterrupt:
        print("\n(stopped)", file=sys.stderr, flush=True)
        return "".join(pieces), None
    finally:
        handle.cancel()


def run(args: argparse.Namespace) -> int:
    notes = Notes(args)
    params = sampling_params(args)
    with contextlib.suppress(ImportError):  # line editing and history for input()
        import readline  # noqa: F401

    model = load_model(args, notes)
    if model.chat_template_is_default:
        params = dataclasses.replace(params, stop=(*params.stop, *DEFAULT_CHAT_STOP))
    system = [{"role": "system", "content": text_of(args.system)}] if args.system else []
    conv = Conversation(system)
    reserve = min(params.max_tokens, model.n_ctx // 2)
    trained = int(model.config.get("n_ctx_train") or 0)
    interactive = sys.stdin.isatty()
    template = (
        " (it has no chat template: using bitnet's default)"
        if (model.chat_template_is_default)
        else ""
    )
    notes.say(f"chat with {model.path}{template}. /help for commands, /exit or Ctrl-D to quit.")
    totals = _Totals()
    try:
        while True:
            try:
                line = input("> " if interactive else "")
            except EOFError:
                if interactive:
                    print(file=sys.stderr)
                return 0
            except KeyboardInterrupt:
                print(file=sys.stderr)
                return 0
            line = text_of(line)
            text = line.strip()
            if not text:
                continue
            if text in ("/exit", "/quit"):
                return 0
            if text == "/help":
                print(HELP, file=sys.stderr)
                continue
            if text == "/reset":
                conv.turns.clear()
                print("(conversation cleared)", file=sys.stderr)
                continue
            if text == "/history":
                for m in conv.messages():
                    print(f"[{m['role']}] {m['content']}")
                continue
            if text.startswith("/"):
                print(f"unknown command {text.split()[0]}; /help lists them", file=sys.stderr)
                continue
            ids, dropped = conv.fit(model, line, reserve)
            if dropped:
                notes.say(
                    f"the conversation outgrew the context ({model.n_ctx} tokens): dropped the "
                    f"oldest {dropped} message{'s' if dropped > 1 else ''}"
                    + (" (the system prompt stays)" if system else "")
                )
            if len(ids) >= model.n_ctx:
                print(
                    f"bitnet: error: this message needs {len(ids)} tokens with the system "
                    f"prompt, but the context holds {model.n_ctx}; shorten it, or raise "
                    "-c/--ctx",
                    file=sys.stderr,
                )
                continue
            conv.turns.append({"role": "user", "content": line})
            reply, completion = _reply(model, ids, params)
            print()
            conv.turns.append({"role": "assistant", "content": reply})
            if completion is None:
                continue
            totals.add(completion)
            notice = finish_notice(
                completion,
                n_ctx=model.n_ctx,
                trained=trained,
                max_tokens_given=args.max_tokens is not None,
            )
            if notice:
                notes.say(notice)
            if notes.verbose:
                notes.detail(timings_line(completion))
    finally:
        if totals.replies:
            notes.say(totals.line())
