"""``bitnet serve --ray``: the app as Ray Serve replicas on a local Ray instance (started and
stopped by the command), reached through Ray's proxy with the ``openai`` client."""

from __future__ import annotations

import signal
import time

import pytest

pytest.importorskip("ray.serve")
openai = pytest.importorskip("openai")

from bitnet.api import default_model_path
from bitnet.errors import ParameterError
from bitnet.server.ray_serve import app_builder
from server_util import ServerProcess, get, post_json, sse_events


def test_app_builder_maps_options_to_the_deployment():
    app = app_builder(
        {
            "model": str(default_model_path()),
            "replicas": "2",
            "n_parallel": "3",
            "n_ctx": "512",
            "api_keys": "a,b",
            "kv_budget": "none",
        }
    )
    d = app._bound_deployment
    assert d.num_replicas == 2 and d.max_ongoing_requests == 6
    settings = d.init_args[0]
    assert (settings.n_parallel, settings.n_ctx, settings.api_keys, settings.kv_budget) == (
        3,
        512,
        ("a", "b"),
        None,
    )
    scaled = app_builder({"min_replicas": "1", "max_replicas": "3", "target_ongoing": "2.5"})
    cfg = scaled._bound_deployment._deployment_config.autoscaling_config
    assert (cfg.min_replicas, cfg.max_replicas, cfg.target_ongoing_requests) == (1, 3, 2.5)
    with pytest.raises(ParameterError, match="bogus"):
        app_builder({"bogus": "1"})
    with pytest.raises(ParameterError, match="n_ctx"):
        app_builder({"n_ctx": "many"})
    with pytest.raises(ParameterError, match="max_replicas"):
        app_builder({"min_replicas": "3", "max_replicas": "2"})


def test_two_replicas_serve_through_rays_proxy_and_stop_on_sigterm():
    with ServerProcess(
        "--ray",
        "--replicas",
        "2",
        "--replica-cpus",
        "0.5",
        "-c",
        "512",
        "-t",
        "1",
        "--log-level",
        "warning",
        env={"RAY_DEDUP_LOGS": "0"},
    ) as server:
        server.wait_healthy(timeout_s=300)
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=60)
        model_id = client.models.list().data[0].id
        kw = {"model": model_id, "prompt": "In the beginning", "max_tokens": 12, "seed": 4}
        whole = client.completions.create(**kw)
        assert whole.usage.completion_tokens == 12
        # Whichever replica answers, the same seed gives the same text (one file, one engine each).
        events = list(sse_events(server.url, "/v1/completions", {**kw, "stream": True}))
        assert events[-1] == "[DONE]"
        assert (
            "".join(e["choices"][0]["text"] for e in events[:-1] if e["choices"])
            == whole.choices[0].text
        )
        status, _, out = post_json(server.url + "/v1/completions", {"prompt": 3})
        assert status == 400 and out["error"]["param"] == "prompt"
        assert get(server.url + "/-/healthz")[0] == 200
        server.proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        assert server.proc.wait(timeout=120) == 0
        assert time.monotonic() - start < 120
