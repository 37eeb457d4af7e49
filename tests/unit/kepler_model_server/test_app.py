"""`create_app` in process (FastAPI with the Front middleware), as an embedding application uses it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kepler_model_server import create_app
from kepler_model_server.app import route_of
from tests.support.server import FakeModel, publish

BODY = {"metrics": ["bpf_cpu_time_ms", "bpf_page_cache_hit"], "output_type": "AbsPower", "weight": True}


@pytest.mark.parametrize("fast_path", [True, False])
def test_create_app_answers_in_process(tmp_path: Path, fast_path: bool) -> None:
    publish(tmp_path, "p", [FakeModel("SGDRegressorTrainer", mae=4.0)])
    app = create_app(tmp_path, max_body_bytes=1000, fast_path=fast_path)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
            answer = await client.post("/model", json=BODY)
            assert answer.status_code == 200 and answer.headers["x-model-name"] == "SGDRegressorTrainer_0"
            assert answer.headers["x-model-mae"] == "4.0"
            assert "model_name" not in answer.json()  # no machine_spec: Kepler 0.7.11's plain component map
            assert (await client.post("/model", content=b"x" * 2000)).status_code == 413
            bad_output = await client.post("/model", json={**BODY, "output_type": "Watts"})
            assert bad_output.json()["error"] == "InvalidRequest"
            assert (await client.get("/readyz")).status_code == 200
            families = text_string_to_metric_families((await client.get("/metrics")).text)
            counted = {(s.labels["route"], s.labels["status"]): s.value for f in families for s in f.samples
                       if s.name == "kepler_model_server_requests_total"}
            assert counted[("/model", "413")] == 1 and counted[("/model", "200")] == 1
    asyncio.run(scenario())


@pytest.mark.parametrize(("path", "route"), [
    ("/model", "/model"), ("/models/a/b", "/models"), ("/model-weights/x", "/model-weights"),
    ("/modelsX", "other"), ("/../etc", "other"), ("/metrics", "/metrics"),
])
def test_route_labels_are_a_fixed_set(path: str, route: str) -> None:
    assert route_of("GET", path) == route


def test_batched_request_metrics_equal_one_observation_at_a_time() -> None:
    """RequestMetrics adds counts in batches through prometheus-client internals: the exposition
    must equal what observe() and inc() one request at a time would give."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.metrics import Counter, Histogram

    from kepler_model_server.metrics import LATENCY_BUCKETS, RequestMetrics

    requests = [("/model", "POST", 200, 0.0004), ("/model", "POST", 200, 0.0005), ("/model-weights", "GET", 404, 0.03),
                ("/model", "POST", 400, 2.5), ("/model", "POST", 200, 7.0), ("/model-weights", "GET", 200, 0.001)]
    batched_registry, direct_registry = CollectorRegistry(), CollectorRegistry()
    batched = RequestMetrics(batched_registry)
    for request in requests:
        batched.observe(*request)  # no running loop here: flushes at once; below, one batch
    batched.flush()
    counter = Counter("kepler_model_server_requests", "HTTP requests answered", ["route", "method", "status"],
                      registry=direct_registry)
    latency = Histogram("kepler_model_server_request_duration_seconds", "Time to answer a request", ["route"],
                        buckets=LATENCY_BUCKETS, registry=direct_registry)
    Counter("kepler_model_server_selections", "Models chosen by selection requests (POST /model, short names)",
            ["pipeline", "source", "output_type", "feature_group", "model", "node_type_match"],
            registry=direct_registry)
    for route, method, status, seconds in requests:
        counter.labels(route, method, str(status)).inc()
        latency.labels(route).observe(seconds)

    async def in_one_batch() -> None:
        again = RequestMetrics(CollectorRegistry())
        for request in requests:
            again.observe(*request)
        assert not list(again.requests.collect())[0].samples  # inside a loop, nothing is written before the flush
        again.flush()
        assert _samples(again) == _samples(batched)
    assert generate_latest(batched_registry) == generate_latest(direct_registry)
    asyncio.run(in_one_batch())


def _samples(metrics) -> list:
    return [(s.name, s.labels, s.value) for m in (metrics.requests, metrics.latency) for f in m.collect()
            for s in f.samples]


@pytest.mark.parametrize(("address", "expected"), [
    ("127.0.0.1:8100", ("127.0.0.1", 8100)), ("[::1]:443", ("::1", 443)), ("", None), ("unix", ("unix", 0)),
])
def test_rsgi_addresses_become_asgi_pairs(address: str, expected: tuple | None) -> None:
    from kepler_model_server.rsgi import _address

    assert _address(address) == expected


@pytest.mark.parametrize("fast_path", [True, False])
def test_the_app_answers_when_mounted_under_a_prefix(tmp_path: Path, fast_path: bool) -> None:
    """An embedding application may mount the server under a path: the model routes still answer."""
    from fastapi import FastAPI

    publish(tmp_path, "p", [FakeModel("SGDRegressorTrainer", mae=4.0)])
    parent = FastAPI()
    parent.mount("/kepler", create_app(tmp_path, fast_path=fast_path))

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(parent), base_url="http://test") as client:
            weights = await client.get("/kepler/model-weights/AbsPower", params={"energy-source": "rapl-sysfs"})
            assert weights.status_code == 200 and weights.headers["x-model-name"] == "SGDRegressorTrainer_0"
            best = await client.get("/kepler/best-models")
            assert best.status_code == 200 and best.json()["AbsPower"]
    asyncio.run(scenario())
