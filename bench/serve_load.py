#!/usr/bin/env python3
"""Load test of OpenAI-compatible servers: N concurrent streaming clients for T seconds (never a
test: it reports, it does not assert timings).

Each client sends /v1/completions streaming requests back to back (a fixed prompt, a seed per
request, ``max_tokens`` tokens with ``ignore_eos``) until the time is up, then finishes the
request in flight. Reported per target:

* errors: HTTP statuses other than 200, error events, streams without ``[DONE]`` or without a
  finish_reason, timeouts;
* lost or duplicated tokens: every stream asks for ``logprobs`` (one entry per token, as
  OpenAI, llama-server and bitnet send them) and ``stream_options.include_usage``; the number
  of entries must equal ``usage.completion_tokens``; with ``--replay K``, K finished streams are
  sent again without streaming, same seed, and their text must equal the streamed text (bitnet's
  engine is batch-invariant, so it must; a peer that is not may differ: reported, not hidden);
* p50/p99 time to first token, p50/p99 time between tokens (chunk gaps divided by the tokens
  the chunk carries), aggregate generated tokens/s (usage counts over the wall time).

Targets run one after the other in the same invocation, each optionally started by the script
(``--start NAME=COMMAND``: launched, waited for until GET /health is 200, stopped with SIGTERM
afterwards), so a quiet machine measures them under the same conditions. Example, bitnet next to
llama-server on the same file::

    python bench/serve_load.py --clients 32 --duration 60 --max-tokens 128 \\
      --target bitnet=http://127.0.0.1:8080 \\
      --start "bitnet=python -m bitnet serve -m 2b4t.gguf -c 4096 -np 32 -t 2 --port 8080" \\
      --target llama-server=http://127.0.0.1:8081 \\
      --start "llama-server=llama-server -m 2b4t.gguf -c 32768 -np 8 -t 2 --port 8081"

Only the standard library is used (a small HTTP/1.1 client on asyncio), so the load generator
itself costs little CPU next to the servers it measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

PROMPT = (
    "The following is a long story about a traveller who crosses the mountains in winter, "
    "meets a shepherd, and learns the names of the stars. Chapter one. "
)


# -- a minimal HTTP/1.1 client ------------------------------------------------------------------
class HttpError(Exception):
    pass


async def _read_headers(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    status_line = await reader.readline()
    if not status_line:
        raise HttpError("connection closed before the status line")
    parts = status_line.decode("latin-1").split(" ", 2)
    status = int(parts[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    return status, headers


async def _body_chunks(reader: asyncio.StreamReader, headers: dict[str, str]) -> Any:
    """Yields the body's bytes as they arrive (chunked or Content-Length or until close)."""
    if headers.get("transfer-encoding", "").lower() == "chunked":
        while True:
            size_line = await reader.readline()
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readline()
                return
            data = await reader.readexactly(size)
            await reader.readexactly(2)
            yield data
    elif "content-length" in headers:
        yield await reader.readexactly(int(headers["content-length"]))
    else:
        while data := await reader.read(65536):
            yield data


async def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> Any:
    """POSTs JSON; returns (status, async iterator of body bytes, writer to close)."""
    u = urlsplit(url)
    reader, writer = await asyncio.open_connection(u.hostname, u.port or 80)
    payload = json.dumps(body).encode()
    head = [
        f"POST {u.path or '/'} HTTP/1.1",
        f"Host: {u.hostname}:{u.port or 80}",
        "Content-Type: application/json",
        "Accept: text/event-stream, application/json",
        f"Content-Length: {len(payload)}",
        "Connection: close",
        *[f"{k}: {v}" for k, v in headers.items()],
    ]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
    await writer.drain()
    status, resp_headers = await _read_headers(reader)
    return status, _body_chunks(reader, resp_headers), writer


# -- one streamed request -----------------------------------------------------------------------
@dataclass
class Result:
    ok: bool
    error: str = ""
    text: str = ""
    seed: int = 0
    ttft_s: float = 0.0
    gaps_s: list[float] = field(default_factory=list)  # per token
    completion_tokens: int = 0
    logprob_tokens: int = 0


def request_body(args: argparse.Namespace, seed: int, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": args.model,
        "prompt": PROMPT * args.prompt_repeat,
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "seed": seed,
        "ignore_eos": True,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
        body["logprobs"] = 0  # one entry per token: the check for lost/duplicated tokens
    return body


async def stream_one(
    url: str, args: argparse.Namespace, seed: int, headers: dict[str, str]
) -> Result:
    t0 = time.perf_counter()
    res = Result(ok=False, seed=seed)
    writer = None
    try:
        status, body, writer = await post(
            url + "/v1/completions", request_body(args, seed, True), headers
        )
        buf = b""
        last = 0.0
        done = finished = False
        parts: list[str] = []
        async for data in body:
            buf += data
            while b"\n\n" in buf:
                raw, buf = buf.split(b"\n\n", 1)
                line = raw.strip()
                if status != 200:
                    res.error = f"HTTP {status}: {raw[:200]!r}"
                    return res
                if not line.startswith(b"data:"):
                    continue  # comments (pings)
                payload = line[5:].strip()
                if payload == b"[DONE]":
                    done = True
                    continue
                obj = json.loads(payload)
                if "error" in obj:
                    res.error = f"error event: {obj['error']}"
                    return res
                if obj.get("usage"):
                    res.completion_tokens = int(obj["usage"]["completion_tokens"])
                for choice in obj.get("choices") or []:
                    text = choice.get("text") or ""
                    lp = choice.get("logprobs") or {}
                    n_tok = len(lp.get("tokens") or lp.get("content") or [])
                    res.logprob_tokens += n_tok
                    if text or n_tok:
                        now = time.perf_counter()
                        if not parts and not last:
                            res.ttft_s = now - t0
                        elif last:
                            k = max(1, n_tok)
                            res.gaps_s.extend([(now - last) / k] * k)
                        last = now
                        parts.append(text)
                    if choice.get("finish_reason"):
                        finished = True
        if status != 200:
            res.error = f"HTTP {status}: {buf[:200]!r}"
            return res
        res.text = "".join(parts)
        if not done or not finished:
            res.error = f"stream ended without {'[DONE]' if not done else 'finish_reason'}"
            return res
        if res.logprob_tokens and res.logprob_tokens != res.completion_tokens:
            res.error = (
                f"{res.logprob_tokens} tokens streamed but usage says {res.completion_tokens}"
            )
            return res
        res.ok = True
        return res
    except (OSError, HttpError, ValueError, asyncio.IncompleteReadError) as e:
        res.error = f"{type(e).__name__}: {e}"
        return res
    finally:
        if writer is not None:
            writer.close()


async def complete_one(
    url: str, args: argparse.Namespace, seed: int, headers: dict[str, str]
) -> str:
    status, body, writer = await post(
        url + "/v1/completions", request_body(args, seed, False), headers
    )
    try:
        data = b"".join([d async for d in body])
    finally:
        writer.close()
    if status != 200:
        raise HttpError(f"replay: HTTP {status}: {data[:200]!r}")
    return str(json.loads(data)["choices"][0]["text"])


# -- one target ----------------------------------------------------------------------------------
def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


async def run_target(name: str, url: str, args: argparse.Namespace) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    results: list[Result] = []
    deadline = time.perf_counter() + args.duration
    seeds = iter(range(args.seed, 1 << 62))

    async def client() -> None:
        while time.perf_counter() < deadline:
            results.append(
                await asyncio.wait_for(
                    stream_one(url, args, next(seeds), headers), args.request_timeout
                )
            )

    t0 = time.perf_counter()
    outcomes = await asyncio.gather(
        *(client() for _ in range(args.clients)), return_exceptions=True
    )
    wall = time.perf_counter() - t0
    timeouts = sum(isinstance(o, asyncio.TimeoutError) for o in outcomes)
    good = [r for r in results if r.ok]
    errors = [r.error for r in results if not r.ok]
    mismatches = 0
    for r in good[: args.replay]:
        if await complete_one(url, args, r.seed, headers) != r.text:
            mismatches += 1
    tokens = sum(r.completion_tokens for r in good)
    gaps = [g for r in good for g in r.gaps_s]
    return {
        "target": name,
        "requests": len(results),
        "errors": len(errors) + timeouts,
        "first_errors": errors[:3],
        "replayed": min(args.replay, len(good)),
        "replay_mismatches": mismatches,
        "tokens": tokens,
        "wall_s": wall,
        "tokens_per_s": tokens / wall if wall else 0.0,
        "ttft_p50_ms": 1e3 * pct([r.ttft_s for r in good], 50),
        "ttft_p99_ms": 1e3 * pct([r.ttft_s for r in good], 99),
        "itl_p50_ms": 1e3 * pct(gaps, 50),
        "itl_p99_ms": 1e3 * pct(gaps, 99),
        "itl_mean_ms": 1e3 * statistics.fmean(gaps) if gaps else float("nan"),
    }


def wait_healthy(url: str, timeout_s: float, proc: subprocess.Popen[bytes] | None) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode} before it was up")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url}/health did not answer 200 within {timeout_s:.0f} s")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--target", action="append", required=True, metavar="NAME=URL")
    p.add_argument(
        "--start",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="start this command for target NAME, stop it after (SIGTERM)",
    )
    p.add_argument("--clients", type=int, default=32, help="concurrent streaming clients")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load per target")
    p.add_argument("--max-tokens", type=int, default=128, help="tokens per request")
    p.add_argument("--prompt-repeat", type=int, default=1, help="copies of the ~40-token prompt")
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--seed", type=int, default=1, help="seed of the first request")
    p.add_argument("--replay", type=int, default=8, help="streams re-sent unstreamed to compare")
    p.add_argument("--model", default=None, help="the 'model' field (default: none sent)")
    p.add_argument("--api-key", default=os.environ.get("BITNET_API_KEY"))
    p.add_argument("--request-timeout", type=float, default=600.0)
    p.add_argument("--startup-timeout", type=float, default=600.0)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = p.parse_args()
    starts = dict(s.split("=", 1) for s in args.start)
    rows = []
    for spec in args.target:
        name, url = spec.split("=", 1)
        url = url.rstrip("/")
        proc = None
        if name in starts:
            proc = subprocess.Popen(
                shlex.split(starts[name]), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        try:
            wait_healthy(url, args.startup_timeout, proc)
            print(f"== {name}: {args.clients} clients x {args.duration:.0f} s ...", file=sys.stderr)
            rows.append(asyncio.run(run_target(name, url, args)))
        finally:
            if proc is not None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"clients {args.clients}, {args.duration:.0f} s per target, {args.max_tokens} tokens per request"
    )
    print(
        "| target | requests | errors | replay mismatches | tokens/s | TTFT p50 ms | TTFT p99 ms "
        "| ITL p50 ms | ITL p99 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['target']} | {r['requests']} | {r['errors']} | {r['replay_mismatches']}/{r['replayed']} "
            f"| {r['tokens_per_s']:.1f} | {r['ttft_p50_ms']:.0f} | {r['ttft_p99_ms']:.0f} "
            f"| {r['itl_p50_ms']:.1f} | {r['itl_p99_ms']:.1f} |"
        )
    for r in rows:
        for e in r["first_errors"]:
            print(f"{r['target']}: {e}", file=sys.stderr)
    return 0 if all(r["errors"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
