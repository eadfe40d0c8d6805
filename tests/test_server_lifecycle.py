"""The server's life: /health while loading and after a failed load, a client that disconnects
mid-stream (its sequence is freed, seen through /metrics), SIGTERM with requests in flight (they
are answered, the process exits 0), the command line."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("uvicorn")

import bitnet
from bitnet.api import default_model_path
from bitnet.server import ServerSettings, app
from server_util import ServerProcess, ServerThread, get, metric, post_json, sse_events

PROMPT = "In the beginning"


def _wait(predicate, timeout_s: float = 30, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_health_is_503_while_loading_then_200(monkeypatch):
    release = threading.Event()
    real = app.load_model

    def slow_load(settings):
        release.wait(30)
        return real(settings)

    monkeypatch.setattr(app, "load_model", slow_load)
    s = ServerThread(ServerSettings(n_ctx=256, n_threads=1))
    try:
        status, _, body = get(s.url + "/health")
        assert status == 503 and b"Loading model" in body
        status, _, out = post_json(s.url + "/v1/completions", {"prompt": PROMPT})
        assert status == 503 and out["error"]["code"] == "model_not_ready"
        release.set()
        _wait(lambda: get(s.url + "/health")[0] == 200, what="the model to load")
        status, _, out = post_json(s.url + "/v1/completions", {"prompt": PROMPT, "max_tokens": 2})
        assert status == 200
    finally:
        release.set()
        s.stop()


def test_failed_load_is_503_and_calls_back(tmp_path):
    failures = []
    s = ServerThread(
        ServerSettings(model=str(tmp_path / "missing.gguf")), on_load_failure=failures.append
    )
    try:
        _wait(lambda: bool(failures), what="the load to fail")
        status, _, body = get(s.url + "/health")
        assert status == 503 and b"missing.gguf" in body
    finally:
        s.stop()


def test_disconnect_mid_stream_frees_the_sequence():
    model = bitnet.load(default_model_path(), n_ctx=4096, n_parallel=2, n_threads=1)
    s = ServerThread(ServerSettings(), model=model)
    try:
        body = {"prompt": PROMPT, "max_tokens": 4000, "ignore_eos": True, "stream": True}
        gen = sse_events(s.url, "/v1/completions", body)
        for _ in range(5):
            event = next(gen)
            assert isinstance(event, dict)
        assert metric(s.url, "bitnet_requests_running") == 1
        gen.close()  # the client goes away
        _wait(lambda: metric(s.url, "bitnet_requests_running") == 0, what="the slot to be freed")
        generated = metric(s.url, "bitnet_generated_tokens_total")
        assert generated < 4000  # it did not run to the end
        time.sleep(0.3)
        assert metric(s.url, "bitnet_generated_tokens_total") == generated  # and stopped there
        assert metric(s.url, "bitnet_client_disconnects_total") == 1
        assert metric(s.url, "bitnet_kv_tokens_used") <= model.engine.stats().kv_tokens_total
        # The freed slot serves the next request.
        status, _, out = post_json(s.url + "/v1/completions", {"prompt": PROMPT, "max_tokens": 3})
        assert status == 200 and out["usage"]["completion_tokens"] == 3
    finally:
        s.stop()


def test_disconnect_of_a_queued_or_unstreamed_request_cancels_it():
    model = bitnet.load(default_model_path(), n_ctx=4096, n_parallel=1, n_threads=1)
    s = ServerThread(ServerSettings(), model=model)
    try:
        running = sse_events(
            s.url,
            "/v1/completions",
            {"prompt": PROMPT, "max_tokens": 4000, "ignore_eos": True, "stream": True},
        )
        next(running)
        # A non-streamed request waits in the queue; its client gives up.
        sock = socket.create_connection(("127.0.0.1", s.port))
        payload = b'{"prompt": "x", "max_tokens": 4000, "ignore_eos": true}'
        sock.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(payload)).encode() + b"\r\n\r\n" + payload
        )
        _wait(lambda: metric(s.url, "bitnet_requests_waiting") == 1, what="the request to queue")
        sock.close()
        _wait(
            lambda: metric(s.url, "bitnet_requests_waiting") == 0, what="the queued request to go"
        )
        running.close()
        _wait(lambda: metric(s.url, "bitnet_requests_running") == 0, what="the slot to be freed")
        assert metric(s.url, "bitnet_client_disconnects_total") == 2
    finally:
        s.stop()


def _stream_all(url: str, body: dict, events: list, started: threading.Event) -> None:
    with contextlib.suppress(OSError):
        for event in sse_events(url, "/v1/completions", body):
            events.append(event)
            started.set()


def test_sigterm_answers_requests_in_flight_then_exits_0():
    with ServerProcess(
        "-c", "2048", "-np", "3", "-t", "1", "--grace", "120", "--log-level", "warning"
    ) as server:
        server.wait_healthy()
        streams: list[list] = [[], [], []]
        threads = []
        for seed, events in enumerate(streams):
            started = threading.Event()
            body = {
                "prompt": PROMPT,
                "max_tokens": 600,
                "ignore_eos": True,
                "stream": True,
                "stream_options": {"include_usage": True},
                "seed": seed,
            }
            t = threading.Thread(target=_stream_all, args=(server.url, body, events, started))
            t.start()
            assert started.wait(60)
            threads.append(t)
        server.proc.send_signal(signal.SIGTERM)
        at_sigterm = [len(events) for events in streams]

        def refused() -> bool:  # it stops accepting at once
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
            except OSError:
                return True
            return False

        _wait(refused, timeout_s=10, what="the listening socket to close")
        for t in threads:
            t.join(300)
        assert server.proc.wait(timeout=60) == 0
        for events, before in zip(streams, at_sigterm, strict=True):
            assert events[-1] == "[DONE]" and before < len(events) - 2  # it was mid-stream
            assert events[-2]["usage"]["completion_tokens"] == 600
            finals = [e for e in events[:-2] if e["choices"][0]["finish_reason"]]
            assert [e["choices"][0]["finish_reason"] for e in finals] == ["length"]


def test_sigterm_past_the_grace_period_ends_streams_with_an_error_event():
    with ServerProcess("-c", "8192", "-t", "1", "--grace", "1", "--log-level", "warning") as server:
        server.wait_healthy()
        events: list = []
        started = threading.Event()
        body = {"prompt": PROMPT, "max_tokens": 8000, "ignore_eos": True, "stream": True}
        t = threading.Thread(target=_stream_all, args=(server.url, body, events, started))
        t.start()
        assert started.wait(60)
        server.proc.send_signal(signal.SIGTERM)
        t.join(60)
        assert server.proc.wait(timeout=60) == 0
        assert events and events[-1] != "[DONE]"
        assert "error" in events[-1] and events[-1]["error"]["code"] == "shutting_down"


def test_cli_help_and_bad_model():
    out = subprocess.run(
        [sys.executable, "-m", "bitnet", "serve", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    for flag in (
        "--api-key",
        "--parallel",
        "--kv-budget",
        "--max-queue",
        "--grace",
        "--max-body",
        "--ray",
    ):
        assert flag in out.stdout
    with ServerProcess("-m", "/nonexistent/model.gguf", "--log-level", "warning") as server:
        assert server.proc.wait(timeout=60) == 1
        assert "nonexistent" in server.output()
