"""``bitnet serve``: an OpenAI-compatible HTTP server over the continuous-batching engine.

Needs the ``server`` extra (``pip install 'bitnet[server]'``). The command line is
``bitnet serve`` (:mod:`bitnet.server.cli`); in Python::

    from bitnet.server import ServerSettings, create_app
    app = create_app(ServerSettings(model="model.gguf", n_parallel=8))   # any ASGI server

docs/serving.md describes the endpoints, options, errors, metrics and deployment (Ray Serve).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import ServerSettings

if TYPE_CHECKING:
    from .app import create_app
    from .run import serve

__all__ = ["ServerSettings", "create_app", "serve"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the CLI's parser imports this package without the extra installed.
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve":
        from .run import serve

        return serve
    raise AttributeError(f"module 'bitnet.server' has no attribute {name!r}")
