"""Scale-out: the same ASGI app as Ray Serve replicas, one model (and one engine) per replica.

Ray's proxy (port 8000 by default, ``--port`` here) spreads requests over the replicas with
power-of-two-choices routing; each replica is a process that loads the model once, runs its own
continuous-batching engine and answers through :func:`bitnet.server.app.create_app`. On one host
the replicas map the same GGUF file, so its pages are shared through the page cache and each
extra replica costs mostly its KV cache and activations (docs/serving.md has the measurement).

Two ways in:

* ``bitnet serve -m MODEL --ray --replicas N`` (or ``--min-replicas A --max-replicas B`` to
  autoscale) starts or joins a Ray cluster and serves until SIGTERM/SIGINT;
* ``serve run bitnet.server.ray_serve:app_builder model=MODEL replicas=N`` (Ray's own CLI;
  every :class:`~bitnet.server.config.ServerSettings` field and ``replicas``,
  ``min_replicas``, ``max_replicas``, ``target_ongoing``, ``replica_cpus`` are accepted as
  ``key=value``), or ``serve deploy`` with a config file naming that builder.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import threading
from typing import Any

from ray import serve as _ray_serve

from ..errors import BitnetError, ParameterError
from .app import create_app, load_model
from .config import ServerSettings

__all__ = ["app_builder", "build_app", "run_ray"]

log = logging.getLogger("bitnet.server")

serve: Any = _ray_serve  # Ray's annotations are partial; the calls below are checked by tests


@serve.ingress()
class BitnetDeployment:
    """One replica: loads the model in its constructor (Ray reports the replica healthy only
    after that), then serves the app."""

    def __init__(self, settings: ServerSettings) -> None:
        self._settings = settings
        self._model = load_model(settings)
        self._app: Any = None

    def __serve_build_asgi_app__(self) -> Any:
        self._app = create_app(self._settings, model=self._model)
        return self._app

    def check_health(self) -> None:
        """Ray calls this every health-check period; raising gets the replica restarted."""
        state = self._app.state.server if self._app is not None else None
        if state is not None and state.status == "failed":
            raise BitnetError(f"the model failed to load: {state.error}")
        self._model.engine.stats()  # raises once the engine has died or closed


def build_app(
    settings: ServerSettings,
    *,
    replicas: int = 1,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    target_ongoing: float | None = None,
    replica_cpus: float | None = None,
) -> Any:
    """The Ray Serve application (``serve.run`` it).

    Args:
        settings: Options of every replica's server.
        replicas: Fixed number of replicas (without autoscaling bounds).
        min_replicas: Autoscaling lower bound; with max_replicas, enables autoscaling.
        max_replicas: Autoscaling upper bound.
        target_ongoing: Requests per replica the autoscaler aims at (default: n_parallel).
        replica_cpus: CPUs Ray reserves per replica (default: n_threads, or 1).

    Raises:
        ParameterError: Inconsistent bounds.
    """
    if replicas < 1:
        raise ParameterError("replicas", f"replicas must be at least 1, got {replicas}")
    options: dict[str, Any] = {
        "name": "bitnet",
        "ray_actor_options": {"num_cpus": replica_cpus or settings.n_threads or 1},
        # A replica takes what its engine runs at once plus a short queue; Ray's router holds
        # the rest and sends it to the least busy replica.
        "max_ongoing_requests": 2 * settings.n_parallel,
        "graceful_shutdown_timeout_s": settings.grace_s,
        "health_check_period_s": 10.0,
        "health_check_timeout_s": 30.0,
    }
    if min_replicas is not None or max_replicas is not None:
        lo = 1 if min_replicas is None else min_replicas
        hi = max(lo, 1) if max_replicas is None else max_replicas
        if not 0 <= lo <= hi or hi < 1:
            raise ParameterError(
                "max_replicas",
                f"autoscaling needs 0 <= min_replicas <= max_replicas and max_replicas >= 1, "
                f"got {lo} and {hi}",
            )
        options["autoscaling_config"] = {
            "min_replicas": lo,
            "max_replicas": hi,
            "initial_replicas": max(lo, 1),
            "target_ongoing_requests": target_ongoing or float(settings.n_parallel),
        }
    else:
        options["num_replicas"] = replicas
    return serve.deployment(BitnetDeployment, **options).bind(settings)


_SCALING_KEYS = {
    "replicas": int,
    "min_replicas": int,
    "max_replicas": int,
    "target_ongoing": float,
    "replica_cpus": float,
}


def app_builder(args: dict[str, str]) -> Any:
    """``serve run bitnet.server.ray_serve:app_builder model=M replicas=2 n_parallel=8 ...``.

    Raises:
        ParameterError: An unknown key or a value of the wrong type.
    """
    fields = {f.name: f for f in dataclasses.fields(ServerSettings)}
    settings_kw: dict[str, Any] = {}
    scaling: dict[str, Any] = {}
    for key, raw in args.items():
        try:
            if key in _SCALING_KEYS:
                scaling[key] = _SCALING_KEYS[key](raw)
            elif key == "api_keys":
                settings_kw[key] = ServerSettings.keys_from_env(str(raw))
            elif key in fields:
                settings_kw[key] = _convert(fields[key].type, raw)
            else:
                known = ", ".join(sorted([*fields, *_SCALING_KEYS]))
                raise ParameterError(key, f"unknown option {key!r}; the options are {known}")
        except ValueError as e:
            raise ParameterError(key, f"{key}: {e}") from None
    return build_app(ServerSettings(**settings_kw), **scaling)


def _convert(annotation: Any, raw: Any) -> Any:
    kind = str(annotation)
    if not isinstance(raw, str):
        return raw
    if raw.lower() in ("none", "null") and "None" in kind:
        return None
    if kind.startswith("int"):
        return int(raw)
    if kind.startswith("float"):
        return float(raw)
    return raw


def run_ray(settings: ServerSettings, args: argparse.Namespace) -> int:
    """``bitnet serve --ray``: serves on Ray until SIGTERM or SIGINT, then shuts Serve down.

    Returns:
        The exit status.
    """
    import ray as _ray

    ray: Any = _ray
    started_here = args.ray_address is None
    ray.init(address=args.ray_address, include_dashboard=False, logging_level=logging.WARNING)
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        serve.start(http_options={"host": settings.host, "port": settings.port})
        app = build_app(
            settings,
            replicas=args.replicas,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
            target_ongoing=args.target_ongoing,
            replica_cpus=args.replica_cpus,
        )
        serve.run(app, name="bitnet", route_prefix="/")
        log.info("Ray Serve is serving on http://%s:%d", settings.host, settings.port)
        while not stop.wait(1.0):
            pass
        log.info("stopping: replicas finish in-flight requests within %.0f s", settings.grace_s)
        serve.shutdown()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if started_here:
            ray.shutdown()
    return 0
