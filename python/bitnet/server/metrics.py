"""Prometheus metrics of one server: the engine's counters read at scrape time, plus HTTP-side
latencies (time to first token, time between tokens, request duration).

Each app has its own registry (two servers in one process never mix their numbers). Names
start with ``bitnet_``; docs/serving.md lists them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# EngineStats field -> (metric name, help, kind). Counters get "_total" from the client library.
_ENGINE_METRICS: tuple[tuple[str, str, str, str], ...] = (
    ("running", "bitnet_requests_running", "Requests decoding or prefilling now.", "gauge"),
    ("waiting", "bitnet_requests_waiting", "Requests queued for a slot.", "gauge"),
    ("kv_tokens_used", "bitnet_kv_tokens_used", "KV-cache positions in use.", "gauge"),
    ("kv_tokens_total", "bitnet_kv_tokens_capacity", "KV-cache positions in all.", "gauge"),
    (
        "prompt_tokens_total",
        "bitnet_prompt_tokens",
        "Prompt tokens of every request admitted.",
        "counter",
    ),
    (
        "prefix_hit_tokens_total",
        "bitnet_prefix_cache_hit_tokens",
        "Prompt tokens taken from the prefix cache instead of computed.",
        "counter",
    ),
    ("generated_tokens_total", "bitnet_generated_tokens", "Tokens generated.", "counter"),
    ("requests_total", "bitnet_engine_requests", "Requests the engine finished.", "counter"),
    ("steps_total", "bitnet_engine_steps", "Batched decoder steps run.", "counter"),
    ("preemptions_total", "bitnet_preemptions", "Sequences preempted for KV space.", "counter"),
)

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class _EngineCollector(Collector):
    """Reads ``engine.stats()`` when Prometheus scrapes (nothing to keep in sync)."""

    def __init__(self, stats: Callable[[], Any | None]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        if stats is None:  # still loading
            return
        for field, name, doc, kind in _ENGINE_METRICS:
            value = getattr(stats, field, None)
            if value is None:
                continue
            family: Metric = (
                GaugeMetricFamily(name, doc, value=float(value))
                if kind == "gauge"
                else CounterMetricFamily(name, doc, value=float(value))
            )
            yield family
        used, total = getattr(stats, "kv_tokens_used", None), getattr(stats, "kv_tokens_total", 0)
        if used is not None and total:
            yield GaugeMetricFamily(
                "bitnet_kv_cache_usage_ratio", "Share of KV-cache positions in use.", used / total
            )


class Metrics:
    """The metrics of one server.

    Args:
        stats: Returns the engine's stats, or None while the model loads.
    """

    def __init__(self, stats: Callable[[], Any | None]) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "bitnet_http_requests",
            "HTTP requests answered, by route and status.",
            ["route", "status"],
            registry=r,
        )
        self.in_flight = Gauge(
            "bitnet_http_requests_in_flight", "Generation requests being answered.", registry=r
        )
        self.ttft = Histogram(
            "bitnet_time_to_first_token_seconds",
            "From request received to its first token.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.itl = Histogram(
            "bitnet_inter_token_latency_seconds",
            "Between consecutive tokens of a streamed choice.",
            buckets=(0.001, 0.0025, *_LATENCY_BUCKETS),
            registry=r,
        )
        self.duration = Histogram(
            "bitnet_request_duration_seconds",
            "From request received to its last token.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.disconnects = Counter(
            "bitnet_client_disconnects",
            "Requests whose client went away before the answer was complete.",
            registry=r,
        )
        r.register(_EngineCollector(stats))

    def render(self) -> bytes:
        """The text exposition format."""
        return bytes(generate_latest(self.registry))
