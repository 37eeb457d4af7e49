"""`create_app` in process (FastAPI with the Front middleware), as an embedding application uses it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from kepler_trainer.serve import create_app
from kepler_trainer.serve.app import route_of
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.test_serve_support import FakeModel, publish

BODY = {"metrics": ["bpf_cpu_time_ms", "bpf_page_cache_hit"], "output_type": "AbsPower", "weight": True}


@pytest.mark.parametrize("fast_path", [True, False])
def test_create_app_answers_in_process(tmp_path: Path, fast_path: bool) -> None:
    publish(tmp_path, "p", [FakeModel("SGDRegressorTrainer", mae=4.0)])
    app = create_app(tmp_path, max_body_bytes=1000, fast_path=fast_path)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url="http://test") as client:
            answer = await client.post("/model", json=BODY)
            assert answer.status_code == 200 and answer.json()["model_name"] == "SGDRegressorTrainer_0"
            assert answer.headers["x-model-mae"] == "4.0"
            assert (await client.post("/model", content=b"x" * 2000)).status_code == 413
            assert (await client.post("/model", json={**BODY, "output_type": "Watts"})).json()["error"] == "InvalidRequest"
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
