"""The ``bitnet`` command line: convert, info, generate."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .errors import BitnetError


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
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    from .model import load

    model = load(args.model, n_ctx=args.ctx)
    print(model.generate(args.prompt, max_tokens=args.max_tokens))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bitnet", description="Run ternary and binary BitNet models.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("convert", help="convert a Hugging Face checkpoint into a GGUF file")
    c.add_argument("src", help="checkpoint directory (config.json, *.safetensors, tokenizer)")
    c.add_argument("dst", help="output .gguf file")
    c.add_argument(
        "--weight-type",
        default="tq2_0",
        choices=["tq2_0", "tq1_0", "i2_s", "f16", "f32"],
        help="storage of ternary weights (default tq2_0)",
    )
    c.add_argument(
        "--embedding-type",
        default="f16",
        choices=["f16", "f32", "bf16"],
        help="storage of embeddings and output layer (default f16)",
    )
    c.add_argument("--tokenizer", default=None, help="directory with the tokenizer, if not in src")
    c.add_argument("--overwrite", action="store_true", help="replace dst if it exists")
    c.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=_cmd_convert)

    i = sub.add_parser("info", help="print a GGUF file's metadata and tensor table")
    i.add_argument("file")
    i.set_defaults(func=_cmd_info)

    g = sub.add_parser("generate", help="continue a prompt (greedy)")
    g.add_argument("-m", "--model", required=True, help="a .gguf model file")
    g.add_argument("prompt")
    g.add_argument("-n", "--max-tokens", type=int, default=128)
    g.add_argument("--ctx", type=int, default=0, help="context length (default: the model's)")
    g.set_defaults(func=_cmd_generate)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (BitnetError, FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"bitnet: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
