"""Model management, like Ollama's: ``pull``, ``models`` (list), ``rm``; and ``info``,
``convert``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import BitnetError
from ._common import ArgumentError, Notes, add_model_options, add_output_options, model_name

__all__ = ["add_parser"]


def add_parser(sub: Any) -> list[argparse.ArgumentParser]:
    from ..convert import EMBEDDING_TYPES, WEIGHT_TYPES

    pull = sub.add_parser(
        "pull",
        help="download a hub model (and convert it) so it runs offline",
        description="Download the latest revision of a hub model into the cache, converting a "
        "safetensors checkpoint once. Prints the GGUF file's path.",
    )
    pull.add_argument("name", metavar="MODEL", help="'owner/repo' or a registry name")
    pull.add_argument("--revision", default=None, help="branch, tag or commit (default main)")
    pull.add_argument(
        "--weight-type",
        default="tq2_0",
        choices=WEIGHT_TYPES,
        help="storage of ternary weights when converting (default tq2_0)",
    )
    add_output_options(pull)
    pull.set_defaults(func=_cmd_pull)

    ls = sub.add_parser(
        "models",
        help="list the models in the cache (--known: the registry of hub models)",
        description="List the models that run without the network: the bundled model, "
        "downloaded GGUF files and converted checkpoints. --known lists the known hub "
        "checkpoints instead, with their short names.",
    )
    ls.add_argument("--known", action="store_true", help="list the registry of hub models")
    ls.add_argument("-v", "--verbose", action="store_true", help="with files and descriptions")
    ls.set_defaults(func=_cmd_models)

    rm = sub.add_parser(
        "rm",
        help="delete models from the cache",
        description="Delete hub models' downloads and conversions from the caches.",
    )
    rm.add_argument("names", nargs="+", metavar="MODEL", help="'owner/repo' or a registry name")
    rm.set_defaults(func=_cmd_rm)

    info = sub.add_parser(
        "info",
        help="print a model file's metadata and tensor table",
        description="Print the GGUF metadata and tensor table of a model (-m, or MODEL).",
    )
    info.add_argument("file", nargs="?", default=None, metavar="MODEL", help="same as -m MODEL")
    add_model_options(info, runs=False)
    info.set_defaults(func=_cmd_info)

    v = sub.add_parser(
        "convert",
        help="convert a Hugging Face checkpoint into a GGUF file",
        description="Convert a Hugging Face BitNet checkpoint (a directory, or a hub "
        "repository 'owner/repo', downloaded or taken from the cache) into one GGUF file.",
    )
    v.add_argument("src", help="checkpoint directory, or 'owner/repo' on the hub")
    v.add_argument("dst", help="output .gguf file")
    v.add_argument("--revision", default=None, help="hub branch, tag or commit of SRC")
    v.add_argument(
        "--weight-type",
        default="tq2_0",
        choices=WEIGHT_TYPES,
        help="storage of ternary weights (default tq2_0)",
    )
    v.add_argument(
        "--embedding-type",
        default="f16",
        choices=EMBEDDING_TYPES,
        help="storage of embeddings and output layer (default f16)",
    )
    v.add_argument(
        "--tokenizer", default=None, metavar="DIR", help="tokenizer directory, if not in SRC"
    )
    v.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    add_output_options(v)
    v.set_defaults(func=_cmd_convert)
    return [pull, ls, rm, info, v]


def size_text(n: int) -> str:
    """Bytes as Ollama shows them: '2.7 MB', '1.2 GB' (powers of 1000)."""
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


def _age(seconds: float) -> str:
    """'3 minutes ago', like `ollama list`."""
    delta = max(0.0, time.time() - seconds)
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if delta >= size:
            n = int(delta // size)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"


def _cmd_pull(args: argparse.Namespace) -> int:
    from .. import hub

    notes = Notes(args)
    path = hub.pull(
        args.name, revision=args.revision, weight_type=args.weight_type, progress=not notes.quiet
    )
    print(path)
    return 0


def _cmd_models(args: argparse.Namespace) -> int:
    from .. import hub
    from ..api import default_model_path

    if args.known:
        print(f"{'NAME':<38} {'PARAMS':>7} {'CHAT':>4}  REPOSITORY")
        for m in hub.registry():
            print(f"{m.name:<38} {m.params:>7} {'yes' if m.chat else 'no':>4}  {m.repo}")
            if args.verbose:
                print(f"{'':<52}{m.description}")
        return 0
    rows: list[tuple[str, str, str, list[Path]]] = []
    try:
        bundled = default_model_path()
        rows.append(
            ("(bundled; used without -m)", size_text(bundled.stat().st_size), "-", [bundled])
        )
    except BitnetError:
        pass
    for c in hub.cached_models():
        name = c.repo + (f" ({c.name})" if c.name else "")
        rows.append((name, size_text(c.size_bytes), _age(c.modified), list(c.files)))
    width = max([len(r[0]) for r in rows] + [30])
    print(f"{'NAME':<{width}}  {'SIZE':>9}  MODIFIED")
    for name, size, modified, files in rows:
        print(f"{name:<{width}}  {size:>9}  {modified}")
        if args.verbose:
            for f in files:
                print(f"{'':<{width}}    {f}")
    if len(rows) <= 1:
        print(
            f"(no hub models in the cache {hub.hf_cache_dir()}; `bitnet pull MODEL` downloads "
            "one, `bitnet models --known` lists known ones)",
            file=sys.stderr,
        )
    return 0


def _cmd_rm(args: argparse.Namespace) -> int:
    from .. import hub

    for name in args.names:
        freed = hub.remove(name)
        print(f"deleted {name} ({size_text(freed)} freed)")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from .. import _core, hub

    if args.file is not None and args.model is not None:
        raise ArgumentError("-m/--model", "give the model once: as -m MODEL or as MODEL")
    if args.file is not None:
        args.model = args.file
    name = model_name(args)
    if hub.is_hub_name(name):
        name = os.fspath(hub.resolve(name, revision=args.revision, progress=sys.stderr.isatty()))
    elif not Path(name).exists():
        raise FileNotFoundError(f"{name}: no such file")
    f = _core.GgufFile(name)
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


def _cmd_convert(args: argparse.Namespace) -> int:
    from ..convert import convert

    notes = Notes(args)
    try:
        out = convert(
            args.src,
            args.dst,
            weight_type=args.weight_type,
            embedding_type=args.embedding_type,
            tokenizer=args.tokenizer,
            overwrite=args.overwrite,
            progress=not notes.quiet,
            revision=args.revision,
        )
    except FileExistsError:
        raise BitnetError(f"{args.dst} exists; --overwrite replaces it") from None
    print(out)
    return 0
