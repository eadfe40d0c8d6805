"""Helpers of the server tests: a real uvicorn server on 127.0.0.1 and a free port, in a thread
of the test process or as a ``bitnet serve`` subprocess, and small raw HTTP clients (for what
the ``openai`` client will not send: hostile bodies, disconnects)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def free_socket() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    return s


def free_port() -> int:
    with contextlib.closing(free_socket()) as s:
        return int(s.getsockname()[1])


class ServerThread:
    """uvicorn serving ``create_app(settings, model=model)`` from a thread (no signal handlers)."""

    def __init__(self, settings: Any, model: Any = None, **app_kw: Any) -> None:
        import uvicorn

        from bitnet.server import create_app

        self.sock = free_socket()
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = create_app(settings, model=model, **app_kw)
        config = uvicorn.Config(self.app, log_level="warning", lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]})
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.01)

    @property
    def state(self) -> Any:
        return self.app.state.server

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=60)
        self.sock.close()


class ServerProcess:
    """``python -m bitnet serve ...`` on a free port, its output in a temporary file (a pipe
    could fill up and block it). Use it as a context manager: it is killed if still running."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by __exit__)
        cmd = [sys.executable, "-m", "bitnet", "serve", "--port", str(self.port), *args]
        self.proc = subprocess.Popen(
            cmd,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
            cwd=ROOT,
        )

    def __enter__(self) -> ServerProcess:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def wait_healthy(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited {self.proc.returncode}: {self.output()}")
            with contextlib.suppress(OSError):
                if get(self.url + "/health")[0] == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the server did not become healthy: {self.output()}")

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")


def request(
    url: str,
    method: str = "GET",
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request; any status, no exceptions for 4xx/5xx."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    return request(url, headers=headers)


def post_json(
    url: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    status, h, data = request(
        url, "POST", raw, {"Content-Type": "application/json", **(headers or {})}
    )
    try:
        return status, h, json.loads(data)
    except ValueError:
        return status, h, data


def metric(base_url: str, name: str, headers: dict[str, str] | None = None) -> float:
    """The value of an unlabelled Prometheus sample."""
    text = get(base_url + "/metrics", headers)[2].decode()
    m = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", text, re.MULTILINE)
    if m is None:
        raise KeyError(f"{name} not in /metrics")
    return float(m.group(1))


def sse_events(
    base_url: str, path: str, body: dict[str, Any], *, timeout: float = 120
) -> Iterator[Any]:
    """Streams a request with http.client; yields each event's JSON, "[DONE]", or a status
    int when the answer is not 200. Closing the generator closes the connection."""
    port = int(base_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    resp = None
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            yield resp.status
            return
        buf = b""
        while True:
            line = resp.readline()
            if not line:
                return
            if line.strip():
                buf += line
                continue
            data = buf.strip()
            buf = b""
            if data.startswith(b"data:"):
                payload = data[5:].strip()
                yield "[DONE]" if payload == b"[DONE]" else json.loads(payload)
    finally:
        if resp is not None:
            resp.close()  # the response owns the socket when the server said it will close
        conn.close()
