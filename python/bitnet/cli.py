"""The ``bitnet`` command line: generate, chat, perplexity, convert, info, models, bench."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Sequence
from typing import Any

from .errors import BitnetError

_EPILOG = """\
examples:
  bitnet generate -m microsoft/bitnet-b1.58-2B-4T-gguf "The capital of France is"
  bitnet chat -m bitnet-2b4t-gguf --system "You are a helpful assistant."
  bitnet convert path/to/checkpoint model.gguf
  bitnet perplexity -m model.gguf wiki.test.raw --window 512
  bitnet models
  bitnet bench -m model.gguf -p 128 -n 64 -t 1,2 -r 3 -o md

A MODEL is a .gguf file, a Hugging Face repository ("owner/repo": downloaded on first use,
converted once and cached), or a short name from `bitnet models`. Without -m, the model
bundled with the package is used (when this build has one).
"""


def _sampling_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "top_k": args.top_k,
        "top_p": args.top_p,
        "min_p": args.min_p,
        "repeat_penalty": args.repeat_penalty,
        "repeat_last_n": args.repeat_last_n,
        "seed": args.seed,
        "stop": tuple(args.stop),
    }


def _load(args: argparse.Namespace) -> Any:
    from .api import default_model_path
    from .model import load

    name = args.model if args.model is not None else default_model_path()
    return load(
        name,
        n_ctx=args.ctx,
        n_threads=args.threads,
        revision=args.revision,
        exact_topk=args.exact_topk,
    )


def _cmd_generate(args: argparse.Namespace) -> int:
    prompt = args.prompt if args.prompt not in (None, "-") else sys.stdin.read()
    model = _load(args)
    out = sys.stdout
    last = ""
    for piece in model.stream(prompt, **_sampling_kwargs(args)):
        out.write(piece)
        out.flush()
        last = piece
    if not last.endswith("\n"):
        out.write("\n")
    return 0


_CHAT_HELP = """commands:
  /reset     forget the conversation (keeps the system prompt)
  /history   show the conversation so far
  /help      show this help
  /exit      quit (also /quit or Ctrl-D)
Ctrl-C while the model writes stops the reply."""


def _cmd_chat(args: argparse.Namespace) -> int:
    from .errors import ShapeError

    with contextlib.suppress(ImportError):  # line editing and history for input()
        import readline  # noqa: F401

    model = _load(args)
    if model.chat_template is None:
        raise BitnetError(f"{model.path}: the model has no chat template; use `bitnet generate`")
    system = [{"role": "system", "content": args.system}] if args.system else []
    history: list[dict[str, str]] = list(system)
    err = sys.stderr
    print(f"bitnet chat: {model.path}. /help for commands, /exit or Ctrl-D to quit.", file=err)
    while True:
        try:
            line = input("> ")
        except (EOFError, KeyboardInterrupt):
            print(file=err)
            return 0
        text = line.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/help":
            print(_CHAT_HELP, file=err)
            continue
        if text == "/reset":
            history = list(system)
            print("(conversation cleared)", file=err)
            continue
        if text == "/history":
            for m in history:
                print(f"[{m['role']}] {m['content']}")
            continue
        if text.startswith("/"):
            print(f"unknown command {text.split()[0]}; /help lists them", file=err)
            continue
        history.append({"role": "user", "content": line})
        reply: list[str] = []
        try:
            for piece in model.chat_stream(history, **_sampling_kwargs(args)):
                sys.stdout.write(piece)
                sys.stdout.flush()
                reply.append(piece)
        except KeyboardInterrupt:
            print("\n(stopped)", file=err)
        except ShapeError as e:
            history.pop()
            print(f"\nbitnet: {e}; /reset starts a new conversation", file=err)
            continue
        print()
        history.append({"role": "assistant", "content": "".join(reply)})


def _cmd_perplexity(args: argparse.Namespace) -> int:
    if args.file == "-":
        text = sys.stdin.read()
    else:
        with open(args.file, encoding="utf-8") as f:
            text = f.read()
    model = _load(args)
    n_tokens = len(model.tokenize(text))
    window = min(args.window or model.n_ctx, model.n_ctx)
    stride = args.stride or max(1, window // 2)
    ppl = model.perplexity(text, window=window, stride=stride, progress=not args.quiet)
    print(f"perplexity {ppl:.4f} over {n_tokens} tokens (window {window}, stride {stride})")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    from .convert import convert

    out = convert(
        args.src,
        args.dst,
        weight_type=args.weight_type,
        embedding_type=args.embedding_type,
        tokenizer=args.tokenizer,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print(out)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from . import _core

    f = _core.GgufFile(args.file)
    print(f"{f.path}: GGUF v{f.version}, {f.file_size} bytes, alignment {f.alignment}")
    cpu = _core.cpu_info()
    print(f"this CPU: {cpu['brand'] or 'unknown'} ({cpu['features']}); kernels: {cpu['isa']}")
    print(f"\nmetadata ({len(f.keys())} keys):")
    for key in f.keys():  # noqa: SIM118 (GgufFile, not a dict)
        value = f.get(key)
        if isinstance(value, (list, tuple)) or hasattr(value, "shape"):
            text = f"[{len(value)} x {f.value_type(key)}]"
        else:
            text = repr(value)
            if len(text) > 80:
                text = text[:77] + "..."
        print(f"  {key:<48} {text}")
    tensors = f.tensors()
    print(f"\ntensors ({len(tensors)}):")
    for t in tensors:
        shape = "x".join(str(d) for d in t["shape"])
        print(f"  {t['name']:<32} {t['type_name']:<6} {shape:<16} {t['size_bytes']:>12} bytes")
    line = _output_layer_line(tensors)
    if line:
        print(f"\n{line}")
    return 0


def _output_layer_line(tensors: list[dict[str, Any]]) -> str | None:
    """What the output layer reads per token, with and without the exact-top-k pre-pass."""
    by_name = {t["name"]: t for t in tensors}
    t = by_name.get("output.weight") or by_name.get("token_embd.weight")
    if t is None or len(t["shape"]) != 2:
        return None
    n_embd, n_vocab = (int(d) for d in t["shape"])
    head = f"output layer ({t['name']}, {n_vocab} rows of {n_embd}):"
    if n_embd % 32:
        return f"{head} f32 (the hidden size is not a multiple of 32: no q8_0, no exact top-k)"
    n = n_vocab * n_embd
    q8 = n + 4 * (n // 32)
    prepass = n // 2 + 2 * (n // 32) + 4 * n_vocab
    return (
        f"{head} q8_0 reads {q8 / 1e6:.1f} MB per token; with exact_topk=True "
        f"(bitnet.load, --exact-topk) a {prepass / 1e6:.1f} MB pre-pass "
        f"({8 * prepass / n:.2f} bits per weight) plus the rows that may reach the top k"
    )


def _cmd_models(args: argparse.Namespace) -> int:
    from .hub import registry

    print(f"{'name':<30} {'params':>7} {'chat':>4}  repository")
    for m in registry():
        print(f"{m.name:<30} {m.params:>7} {'yes' if m.chat else 'no':>4}  {m.repo}")
        if args.verbose:
            print(f"{'':<44}{m.description}")
    return 0


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise ValueError(f"{what} must list at least one integer")
    return values


def _cmd_bench(args: argparse.Namespace) -> int:
    import os
    from pathlib import Path

    from . import hub
    from .bench import run_bench, to_json, to_markdown

    name = args.model
    if hub.is_hub_name(name) and not Path(name).exists():
        name = os.fspath(hub.resolve(name, revision=None, progress=not args.quiet))
    membw: float | str | None = None
    if args.membw is not None:
        if args.membw == "auto":
            membw = "auto"
        else:
            try:
                membw = float(args.membw)
            except ValueError:
                raise ValueError(f"--membw must be 'auto' or GB/s, got {args.membw!r}") from None
    err = sys.stderr
    report = run_bench(
        name,
        n_prompt=args.n_prompt,
        n_gen=args.n_gen,
        threads=_int_list(args.threads, "-t/--threads"),
        reps=args.reps,
        seed=args.seed,
        membw=membw,
        isa=args.isa,
        kernel=args.kernel,
        output_type=args.output_type,
        depths=_int_list(args.depth, "-d/--depth"),
        parallel=_int_list(args.parallel, "--parallel") if args.parallel else (),
        kv_cache=args.kv_cache,
        exact_topk=args.exact_topk,
        progress=None if args.quiet else (lambda line: print(line, file=err, flush=True)),
    )
    sys.stdout.write(to_json(report) + "\n" if args.output == "json" else to_markdown(report))
    return 0


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-m", "--model", default=None, help="a .gguf file, 'owner/repo' or a registry name"
    )
    p.add_argument("--revision", default=None, help="hub branch, tag or commit")
    p.add_argument("--ctx", type=int, default=0, help="context length (default: the model's)")
    p.add_argument(
        "--threads", type=int, default=None, help="threads (default: every hardware thread)"
    )
    p.add_argument(
        "--exact-topk",
        action="store_true",
        help="read about half of the output layer when sampling with --top-k > 0 or "
        "--temperature 0 (identical tokens; pays on trained models: docs/usage.md)",
    )


def _add_sampling_options(p: argparse.ArgumentParser, max_tokens: int) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument(
        "-n",
        "--max-tokens",
        type=int,
        default=max_tokens,
        help=f"most tokens to generate (default {max_tokens})",
    )
    g.add_argument(
        "-t",
        "--temperature",
        type=float,
        default=0.8,
        help="randomness; 0 = always the likeliest token (default 0.8)",
    )
    g.add_argument(
        "--top-k",
        type=int,
        default=40,
        help="sample among the k likeliest tokens, 0 = all (default 40)",
    )
    g.add_argument(
        "--top-p",
        type=float,
        default=0.95,
        help="sample among tokens covering this probability (default 0.95)",
    )
    g.add_argument(
        "--min-p",
        type=float,
        default=0.05,
        help="drop tokens below min-p x the likeliest (default 0.05)",
    )
    g.add_argument(
        "--repeat-penalty",
        type=float,
        default=1.0,
        help="penalize recently seen tokens, 1 = off (default 1.0)",
    )
    g.add_argument(
        "--repeat-last-n",
        type=int,
        default=64,
        help="tokens the repeat penalty looks back on (default 64)",
    )
    g.add_argument(
        "-s",
        "--seed",
        type=int,
        default=None,
        help="random seed, for repeatable output (default: random)",
    )
    g.add_argument(
        "--stop",
        action="append",
        default=[],
        metavar="TEXT",
        help="stop when TEXT appears (repeatable; not printed)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bitnet`` command."""
    p = argparse.ArgumentParser(
        prog="bitnet",
        description="Run ternary (1.58-bit) and binary BitNet language models on the CPU.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser(
        "generate",
        help="continue a prompt, streaming the text",
        description="Continue a prompt, printing the text as it is generated.",
    )
    _add_model_options(g)
    g.add_argument("prompt", nargs="?", default=None, help="the prompt (default or '-': stdin)")
    _add_sampling_options(g, 256)
    g.set_defaults(func=_cmd_generate)

    c = sub.add_parser(
        "chat",
        help="talk to a chat model in the terminal",
        description="Interactive chat with the model's chat template. "
        "Type /help inside for commands.",
    )
    _add_model_options(c)
    c.add_argument("--system", default=None, help="a system prompt")
    _add_sampling_options(c, 512)
    c.set_defaults(func=_cmd_chat)

    q = sub.add_parser(
        "perplexity",
        help="measure perplexity on a text file",
        description="Perplexity of the model on a text, with a sliding window.",
    )
    _add_model_options(q)
    q.add_argument("file", help="a UTF-8 text file ('-': stdin)")
    q.add_argument("--window", type=int, default=0, help="tokens per window (default: context)")
    q.add_argument("--stride", type=int, default=0, help="tokens between windows (default: half)")
    q.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    q.set_defaults(func=_cmd_perplexity)

    v = sub.add_parser(
        "convert",
        help="convert a Hugging Face checkpoint into a GGUF file",
        description="Convert a Hugging Face BitNet checkpoint directory into one GGUF file.",
    )
    v.add_argument("src", help="checkpoint directory (config.json, *.safetensors, tokenizer)")
    v.add_argument("dst", help="output .gguf file")
    v.add_argument(
        "--weight-type",
        default="tq2_0",
        choices=["tq2_0", "tq1_0", "i2_s", "f16", "f32"],
        help="storage of ternary weights (default tq2_0)",
    )
    v.add_argument(
        "--embedding-type",
        default="f16",
        choices=["f16", "f32", "bf16"],
        help="storage of embeddings and output layer (default f16)",
    )
    v.add_argument("--tokenizer", default=None, help="directory with the tokenizer, if not in src")
    v.add_argument("--overwrite", action="store_true", help="replace dst if it exists")
    v.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=_cmd_convert)

    i = sub.add_parser("info", help="print a GGUF file's metadata and tensor table")
    i.add_argument("file")
    i.set_defaults(func=_cmd_info)

    ms = sub.add_parser("models", help="list the known checkpoints on the Hugging Face hub")
    ms.add_argument("-v", "--verbose", action="store_true", help="with descriptions")
    ms.set_defaults(func=_cmd_models)

    b = sub.add_parser(
        "bench",
        help="measure prompt and generation speed, like llama-bench",
        description="Prompt processing (pp) and generation (tg) speed in tokens/s: median "
        "and spread over repetitions, per thread count (docs/benchmarks.md).",
    )
    b.add_argument("-m", "--model", required=True, help="a .gguf file (or a hub/registry name)")
    b.add_argument(
        "-p", "--n-prompt", type=int, default=128, help="prompt tokens of the pp test (default 128)"
    )
    b.add_argument("-n", "--n-gen", type=int, default=64, help="tokens of the tg test (default 64)")
    b.add_argument("-t", "--threads", default="1", help="comma-separated thread counts (default 1)")
    b.add_argument("-r", "--reps", type=int, default=3, help="repetitions (default 3)")
    b.add_argument(
        "-o", "--output", choices=["md", "json"], default="md", help="output format (default md)"
    )
    b.add_argument(
        "--membw",
        default=None,
        metavar="auto|GBPS",
        help="read bandwidth to compare tg with: 'auto' measures it, or a number in GB/s",
    )
    b.add_argument(
        "--isa",
        default=None,
        help="force a lower kernel ISA (ref, avx2, avx512, avx512vnni, avx512vbmi, neon, dotprod)",
    )
    b.add_argument(
        "--kernel",
        choices=["mad", "lut", "t3"],
        default=None,
        help="force a ternary kernel family (t3: 1.67 bits per weight, avx512vbmi)",
    )
    b.add_argument(
        "--output-type",
        choices=["auto", "q8_0", "f32"],
        default=None,
        help="output layer computation (default: the model's auto choice)",
    )
    b.add_argument(
        "-d",
        "--depth",
        default="0",
        help="comma-separated context depths: tokens already in the cache before each test, "
        "like llama-bench -d (default 0)",
    )
    b.add_argument(
        "--parallel",
        default=None,
        metavar="B1,B2,..",
        help="batched tests instead, like llama-batched-bench: B sequences with a prompt of -p "
        "tokens each, then -n tokens generated for each, all B in every step; aggregate and "
        "per-sequence tokens/s",
    )
    b.add_argument(
        "--kv-cache",
        choices=["f16", "q8_0", "f32"],
        default="f16",
        help="KV cache type (default f16)",
    )
    b.add_argument(
        "--exact-topk",
        type=int,
        nargs="?",
        const=1,
        default=0,
        metavar="K",
        help="load the exact-top-k output pre-pass and ask for only the K largest logits in "
        "each tg step (K default 1: the argmax); reports the rows recomputed and the bytes read",
    )
    b.add_argument("--seed", type=int, default=0, help="seed of the random prompt (default 0)")
    b.add_argument("-q", "--quiet", action="store_true", help="no progress lines on stderr")
    b.set_defaults(func=_cmd_bench)

    from .server.cli import add_parser as add_serve_parser

    add_serve_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (errors: one line on stderr, status 1)."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (BitnetError, OSError, ValueError, TypeError) as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"bitnet: error: {message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
