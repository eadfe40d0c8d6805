"""``bitnet serve``: the command line of the server (hooked into ``bitnet``'s parser).

Imports nothing of the server's optional dependencies until the command runs, so ``bitnet
--help`` works without ``bitnet[server]``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from ..errors import BitnetError

__all__ = ["add_parser", "run"]

_DESCRIPTION = """\
Serve a model over HTTP with OpenAI's API (chat and text completions, streaming, structured
output), plus /health, /metrics, /tokenize and /detokenize. Requests run concurrently on the
continuous-batching engine. docs/serving.md explains every option.

examples:
  bitnet serve                                   # the bundled model on 127.0.0.1:8080
  bitnet serve -m bitnet-2b4t-gguf -c 4096 -np 8 --api-key sk-local
  bitnet serve -m model.gguf --ray --replicas 2  # Ray Serve, two replicas
"""


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Adds ``serve`` to the ``bitnet`` command's subparsers."""
    s: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="serve a model over HTTP (OpenAI-compatible API)",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    s.add_argument(
        "-m",
        "--model",
        default=None,
        help="a .gguf file, hub repository or registry name (default: the bundled model)",
    )
    s.add_argument("--revision", default=None, help="hub branch, tag or commit")
    s.add_argument("--alias", default=None, help="model id clients use (default: the file's name)")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=_non_negative, default=8080, help="port (default 8080)")
    s.add_argument(
        "-c", "--ctx", type=_non_negative, default=0, help="tokens per sequence (default: model's)"
    )
    s.add_argument(
        "-np",
        "--parallel",
        type=_positive,
        default=4,
        help="sequences decoding at once (default 4)",
    )
    s.add_argument(
        "--kv-budget",
        type=_positive,
        default=None,
        help="KV-cache tokens across all sequences (default: parallel x ctx)",
    )
    s.add_argument(
        "--kv-cache",
        choices=["f16", "q8_0", "f32"],
        default="f16",
        help="KV-cache storage (default f16)",
    )
    s.add_argument(
        "-b", "--batch", type=_positive, default=512, help="tokens per step (default 512)"
    )
    s.add_argument(
        "--exact-topk",
        action="store_true",
        help="exact-top-k output layer for requests with top_k > 0 or temperature 0 (identical "
        "tokens, about half the output layer's bytes; pays on trained models)",
    )
    s.add_argument(
        "-t", "--threads", type=_positive, default=None, help="threads (default: all hardware)"
    )
    s.add_argument(
        "--max-queue",
        type=_non_negative,
        default=64,
        help="requests waiting for a slot before 503 (default 64)",
    )
    s.add_argument(
        "--api-key",
        default=None,
        help="key(s) clients must send, comma-separated (default: $BITNET_API_KEY; none: open)",
    )
    s.add_argument(
        "--max-body",
        type=_positive,
        default=8 << 20,
        metavar="BYTES",
        help="largest request body (default 8 MiB)",
    )
    s.add_argument(
        "--grace",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, time for in-flight requests to finish (default 30)",
    )
    s.add_argument(
        "--chat-template",
        default=None,
        metavar="FILE",
        help="a Jinja2 chat template to use instead of the model's own",
    )
    s.add_argument(
        "--log-level",
        choices=["debug", "info", "warning", "error"],
        default="info",
        help="log verbosity (default info)",
    )
    r = s.add_argument_group("Ray Serve (pip install 'bitnet[ray]')")
    r.add_argument("--ray", action="store_true", help="run on Ray Serve, one model per replica")
    r.add_argument("--replicas", type=_positive, default=1, help="replicas (default 1)")
    r.add_argument(
        "--min-replicas",
        type=_non_negative,
        default=None,
        help="autoscaling lower bound (enables autoscaling)",
    )
    r.add_argument("--max-replicas", type=_positive, default=None, help="autoscaling upper bound")
    r.add_argument(
        "--target-ongoing",
        type=float,
        default=None,
        help="autoscaling target of requests per replica (default: --parallel)",
    )
    r.add_argument(
        "--ray-address", default=None, help="Ray cluster to join (default: start a local one)"
    )
    r.add_argument(
        "--replica-cpus",
        type=float,
        default=None,
        help="CPUs Ray reserves per replica (default: --threads, or 1)",
    )
    s.set_defaults(func=run)
    return s


def settings_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~bitnet.server.config.ServerSettings` of parsed ``serve`` arguments."""
    from .config import ServerSettings

    return ServerSettings(
        model=args.model,
        revision=args.revision,
        model_id=args.alias,
        host=args.host,
        port=args.port,
        n_ctx=args.ctx,
        n_batch=args.batch,
        n_threads=args.threads,
        n_parallel=args.parallel,
        kv_budget=args.kv_budget,
        kv_cache=args.kv_cache,
        max_queue=args.max_queue,
        api_keys=ServerSettings.keys_from_env(args.api_key),
        max_body_bytes=args.max_body,
        grace_s=args.grace,
        chat_template=_read_template(args.chat_template),
        exact_topk=args.exact_topk,
    )


def _read_template(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as e:
        raise BitnetError(f"--chat-template {path}: {e.strerror}") from None


def _missing_extra(e: ImportError, extra: str) -> BitnetError:
    return BitnetError(f"bitnet serve needs {e.name}: pip install 'bitnet[{extra}]'")


def run(args: argparse.Namespace) -> int:
    """Runs ``bitnet serve``; returns the exit status."""
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = settings_from_args(args)
    if args.ray:
        try:
            from .ray_serve import run_ray
        except ImportError as e:
            raise _missing_extra(e, "ray") from None
        return run_ray(settings, args)
    try:
        from .run import serve
    except ImportError as e:
        raise _missing_extra(e, "server") from None
    if settings.api_keys:
        logging.getLogger("bitnet.server").info(
            "API key required (%d key(s))", len(settings.api_keys)
        )
    elif settings.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("bitnet.server").warning(
            "listening on %s without an API key (--api-key or BITNET_API_KEY)", settings.host
        )
    return serve(settings, log_level=args.log_level)
