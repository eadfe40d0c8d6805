"""Running the app under uvicorn, with a graceful SIGTERM: stop accepting, let in-flight requests
finish within the grace period, cancel what is left, exit 0."""

from __future__ import annotations

import math
import signal
import threading
import time
from typing import Any

from .app import create_app
from .config import ServerSettings

__all__ = ["serve"]


def serve(settings: ServerSettings, *, log_level: str = "info", model: Any = None) -> int:
    """Serves until SIGTERM or SIGINT; returns the exit status (1 when the model fails to load).

    Args:
        settings: The server's options.
        log_level: uvicorn's log level.
        model: A loaded model to serve (None: load ``settings.model`` in the background).
    """
    import uvicorn

    status = 0
    server: uvicorn.Server | None = None

    def load_failed(e: BaseException) -> None:
        nonlocal status
        status = 1
        if server is not None:
            server.should_exit = True

    app = create_app(settings, model=model, on_load_failure=load_failed)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=log_level,
        timeout_graceful_shutdown=math.ceil(settings.grace_s) + 5,
        access_log=log_level == "debug",
        lifespan="on",
    )
    server = uvicorn.Server(config)
    state = app.state.server

    def watch() -> None:
        # uvicorn's own grace period (a few seconds longer) is only a backstop: the engine
        # drains first, so every client gets a complete answer or an error event.
        while not server.should_exit:
            time.sleep(0.05)
        state.shut_down(settings.grace_s)

    threading.Thread(target=watch, name="bitnet-shutdown", daemon=True).start()
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again for the
    # handler that was installed before it: make that a no-op so a requested stop exits 0.
    previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return status
