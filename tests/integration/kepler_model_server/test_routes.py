"""Every route of the real server, over real HTTP, on a pipeline the trainer produced from real data.

The expected answers come from reading the pipeline's files here (an independent walk of the
folder), not from the server's code.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kepler_model_server.metrics import RequestMetrics
from tests.support.server import ServerProcess, zip_names

DATA = Path("/work/shared/data/kepler-metrics/prom_response_2023.json")
PIPELINE = "real"
SPEC = {"processor": "intel_xeon_platinum_8259cl", "cores": 96, "chips": 2, "memory": 377, "frequency": 3500}
# The 2023 data predates bpf_cpu_time_ms: Kepler of that time reported bpf_cpu_time_us.
NODE_METRICS = ["bpf_cpu_time_us", "bpf_page_cache_hit", "cache_miss", "cpu_cycles", "cpu_instructions",
                "cpu_architecture"]
WEIGHT_TRAINERS = {"SGDRegressorTrainer", "LinearRegressionTrainer", "LogarithmicRegressionTrainer",
                   "LogisticRegressionTrainer", "ExponentialRegressionTrainer"}


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real training run (about 15 s): three trainers, both sources, every feature group."""
    if not DATA.exists():
        pytest.skip(f"the real Kepler data {DATA} is not on this machine")
    work = tmp_path_factory.mktemp("serve-real")
    spec = work / "spec.json"
    spec.write_text(json.dumps(SPEC))
    command = [sys.executable, "-m", "kepler_trainer.cli", "train", "-i", str(DATA), "-p", PIPELINE,
               "-e", "rapl-sysfs,acpi", "--model-path", str(work / "models"), "--data-path", str(work / "data"),
               "--abs-trainers", "LinearRegressionTrainer,SGDRegressorTrainer,GradientBoostingRegressorTrainer",
               "--dyn-trainers", "SGDRegressorTrainer,GradientBoostingRegressorTrainer",
               "--machine-spec", str(spec), "-q"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return work / "models"


def needs(server: str) -> None:
    if server == "granian" and importlib.util.find_spec("granian") is None:
        pytest.skip("granian is not installed (pip install granian); uvicorn is tested instead")


@pytest.fixture(scope="module", params=["granian", "uvicorn", "granian-router", "uvicorn-router"])
def server(request: pytest.FixtureRequest, models_dir: Path) -> Iterator[httpx.Client]:
    """Both HTTP servers (granian over RSGI, uvicorn over ASGI) with the fast path and with every request
    routed by FastAPI (granian through the RSGI-to-ASGI bridge): the same answers."""
    name, _, router = request.param.partition("-")
    needs(name)
    extra = ("--http-server", name, *(("--no-fast-path",) if router else ()))
    with ServerProcess(models_dir, *extra) as proc, httpx.Client(base_url=proc.url, timeout=10) as client:
        yield client


def on_disk(models_dir: Path) -> list[dict[str, Any]]:
    """Every model's metadata.json, with where it lives."""
    found = []
    for meta in sorted((models_dir / PIPELINE).glob("*/*/*/*/metadata.json")):
        model_dir = meta.parent
        source, output_type, group = model_dir.parts[-4:-1]
        found.append({**json.loads(meta.read_text()), "_source": source, "_ot": output_type, "_fg": group,
                      "_dir": model_dir, "_path": f"{PIPELINE}/{source}/{output_type}/{group}/{model_dir.name}"})
    return found


def expected_best(models_dir: Path, source: str, output_type: str, metrics: list[str], weight: bool) -> dict:
    usable = [m for m in on_disk(models_dir)
              if m["_source"] == source and m["_ot"] == output_type and set(m["features"]) <= set(metrics)
              and (m["trainer"] in WEIGHT_TRAINERS if weight else True)]
    assert usable, "the trained pipeline has no model for this request: the test data changed"
    return min(usable, key=lambda m: (m["mae"], m["_path"]))


@pytest.mark.parametrize(("source", "sent_source", "output_type"), [
    ("rapl-sysfs", "intel_rapl", "AbsPower"), ("rapl-sysfs", "rapl-sysfs", "DynPower"), ("acpi", "acpi", "AbsPower"),
])
def test_post_model_zip_is_the_lowest_mae_usable_model(server: httpx.Client, models_dir: Path, source: str,
                                                       sent_source: str, output_type: str) -> None:
    answer = server.post("/model", json={"metrics": NODE_METRICS, "output_type": output_type, "source": sent_source})
    assert answer.status_code == 200, answer.text
    best = expected_best(models_dir, source, output_type, NODE_METRICS, weight=False)
    assert answer.headers["content-type"] == "application/zip"
    assert answer.headers["x-model-name"] == best["model_name"]
    assert float(answer.headers["x-model-mae"]) == pytest.approx(best["mae"])
    assert answer.headers["x-model-path"] == best["_path"]
    zipped = best["_dir"].parent / f"{best['model_name']}.zip"
    assert answer.content == zipped.read_bytes()
    assert "metadata.json" in zip_names(answer.content)


def test_post_model_weight_answers_keplers_request(server: httpx.Client, models_dir: Path) -> None:
    """The exact body Kepler 0.7.12's local regressor sends (node_type 0 is Go's zero value)."""
    body = {"metrics": NODE_METRICS, "output_type": "AbsPower", "source": "intel_rapl", "node_type": 0,
            "weight": True, "trainer_name": "SGDRegressorTrainer", "filter": "",
            "machine_spec": {"vendor": "intel", "processor": "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz",
                             "cores": 96, "chips": 2, "memory": 377, "frequency": 3500, "threads_per_core": 2}}
    answer = server.post("/model", json=body)
    assert answer.status_code == 200, answer.text
    doc = answer.json()
    sgd = [m for m in on_disk(models_dir) if m["_source"] == "rapl-sysfs" and m["_ot"] == "AbsPower"
           and m["trainer"] == "SGDRegressorTrainer" and set(m["features"]) <= set(NODE_METRICS)]
    best = min(sgd, key=lambda m: (m["mae"], m["_path"]))
    assert doc["model_name"] == best["model_name"] and doc["mae"] == pytest.approx(best["mae"])
    assert doc["machine_spec"]["cores"] == 96
    published = json.loads((best["_dir"].parent / f"{best['model_name']}.json").read_text())
    for component in ("package", "core", "uncore", "dram"):
        assert doc[component] == published[component]
        assert set(doc[component]["All_Weights"]["Numerical_Variables"]) <= set(NODE_METRICS)
    assert answer.headers["x-model-node-type-match"] == "exact"


def test_post_model_weight_picks_among_weight_capable_trainers(server: httpx.Client, models_dir: Path) -> None:
    answer = server.post("/model", json={"metrics": NODE_METRICS, "output_type": "DynPower", "source": "acpi",
                                         "weight": True})
    best = expected_best(models_dir, "acpi", "DynPower", NODE_METRICS, weight=True)
    assert answer.status_code == 200 and answer.headers["x-model-name"] == best["model_name"]
    # No machine_spec: Kepler 0.7.11's request, whose answer it decodes as a plain component map.
    published = json.loads((best["_dir"].parent / f"{best['model_name']}.json").read_text())
    assert answer.json() == {"platform": published["platform"]}


def test_post_model_without_a_match_is_400_with_a_reason(server: httpx.Client) -> None:
    answer = server.post("/model", json={"metrics": ["cpu_architecture"], "output_type": "AbsPower"})
    assert answer.status_code == 400
    assert answer.json()["error"] == "ModelNotFound" and "features" in answer.json()["message"]
    answer = server.post("/model", json={"metrics": NODE_METRICS, "output_type": "AbsPower", "pipeline_name": "nope"})
    assert answer.status_code == 400 and "not served" in answer.json()["message"]


@pytest.mark.parametrize("body", [b"not json", b"[1]", b'{"metrics": "x", "output_type": "AbsPower"}',
                                  b'{"metrics": [], "output_type": "Watts"}', b'{"output_type": "AbsPower"}',
                                  b'{"metrics": ["../etc"], "output_type": "AbsPower"}',
                                  b'{"metrics": [], "output_type": "AbsPower", "source": "../x"}'])
def test_post_model_rejects_bad_bodies_with_400(server: httpx.Client, body: bytes) -> None:
    answer = server.post("/model", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"] in ("InvalidRequest", "InvalidName")


def test_body_size_limit_is_413_declared_or_streamed(server: httpx.Client) -> None:
    big = b'{"metrics": [' + b'"a",' * 30000 + b'"a"], "output_type": "AbsPower"}'
    def chunks():
        return (big[i:i + 4096] for i in range(0, len(big), 4096))

    for content in (big, chunks()):
        try:  # a connection of its own: the server may close it after refusing
            answer = httpx.post(f"{server.base_url}/model", content=content)
        except (httpx.RemoteProtocolError, httpx.WriteError, httpx.ReadError):
            continue  # the server answered and closed before the client finished sending: refused too
        assert answer.status_code == 413 and answer.json()["error"] == "BodyTooLarge"
    assert httpx.get(f"{server.base_url}/healthz").status_code == 200


def test_best_models_with_dashed_parameters(server: httpx.Client, models_dir: Path) -> None:
    answer = server.get("/best-models", params={"energy-source": "acpi", "output-type": "DynPower"})
    assert answer.status_code == 200
    expected: dict[str, dict[str, Any]] = {}
    loadable: dict[str, dict[str, Any]] = {}   # the best Kepler runs from weights (kepler_weights at publish)
    for m in on_disk(models_dir):
        if m["_source"] == "acpi" and m["_ot"] == "DynPower":
            for best, eligible in ((expected, True), (loadable, m["kepler_weights"])):
                current = best.get(m["_fg"])
                if eligible and (current is None or (m["mae"], m["_path"]) < (current["mae"], current["_path"])):
                    best[m["_fg"]] = m
    assert answer.json() == {"DynPower": {fg: m["model_name"] for fg, m in expected.items()},
                             "kepler_weights": {"DynPower": {fg: loadable[fg]["model_name"] if fg in loadable else None
                                                             for fg in expected}}}
    everything = server.get("/best-models").json()
    assert set(everything) == {"AbsPower", "DynPower", "kepler_weights"} and everything["AbsPower"]
    assert server.get("/best-models", params={"node-type": "7"}).json() == {
        "AbsPower": {}, "DynPower": {}, "kepler_weights": {"AbsPower": {}, "DynPower": {}}}
    assert server.get("/best-models", params={"output-type": "Watts"}).status_code == 400
    assert server.get("/best-models", params={"node-type": "x"}).status_code == 400


def test_models_and_weights_by_path_serve_the_published_files(server: httpx.Client, models_dir: Path) -> None:
    for m in on_disk(models_dir)[::7]:
        zipped = server.get(f"/models/{m['_path']}.zip")
        archive = m["_dir"].parent / f"{m['model_name']}.zip"
        assert zipped.status_code == 200 and zipped.content == archive.read_bytes()
        assert server.get(f"/models/{m['_path']}").content == zipped.content
        weights = server.get(f"/model-weights/{m['_path']}.json")
        if m["trainer"] in WEIGHT_TRAINERS:
            assert weights.status_code == 200
            # The plain component map (Kepler 0.7.11's shape; 0.7.12 names the model after the URL).
            assert weights.json() == json.loads((m["_dir"] / "weight.json").read_text())
            assert weights.headers["x-model-mae"] and weights.headers["x-model-name"] == m["model_name"]
        else:
            assert weights.status_code == 404 and "no weight file" in weights.json()["message"]


def test_short_names_answer_the_default_best_model(server: httpx.Client, models_dir: Path) -> None:
    params = {"energy-source": "acpi", "metrics": ",".join(NODE_METRICS)}
    weights = server.get("/model-weights/AbsPower", params=params)
    best = expected_best(models_dir, "acpi", "AbsPower", NODE_METRICS, weight=True)
    assert weights.status_code == 200 and weights.headers["x-model-name"] == best["model_name"]
    assert set(weights.json()) == {"platform"}
    zipped = server.get("/models/DynPower")
    assert zipped.status_code == 200 and "metadata.json" in zip_names(zipped.content)
    assert server.get("/models/Watts").status_code == 404
    assert server.get("/models/a/b").status_code == 404


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples]


def test_metrics_expose_model_errors_weights_and_requests(server: httpx.Client, models_dir: Path) -> None:
    server.get("/model-weights/AbsPower")
    exposed = samples(server.get("/metrics").text)
    for m in on_disk(models_dir)[::5]:
        model = {"pipeline": PIPELINE, "source": m["_source"], "output_type": m["_ot"], "feature_group": m["_fg"],
                 "model": m["model_name"]}
        mae = [v for name, labels, v in exposed if name == "kepler_model_mae_watts"
               and labels == {**model, "component": "all"}]
        assert mae == [pytest.approx(m["mae"])]
        weights = {(labels["component"], labels["feature"]): v for name, labels, v in exposed
                   if name == "kepler_model_weight" and labels.items() >= model.items()}
        if m["trainer"] in WEIGHT_TRAINERS:
            published = json.loads((m["_dir"].parent / f"{m['model_name']}.json").read_text())
            assert weights == {(c, f): pytest.approx(w["weight"]) for c, doc in published.items()
                               if isinstance(doc, dict) and "All_Weights" in doc
                               for f, w in doc["All_Weights"]["Numerical_Variables"].items()}
        else:
            assert weights == {}
    requests = [v for name, labels, v in exposed if name == "kepler_model_server_requests_total"
                and labels == {"method": "GET", "route": "/model-weights", "status": "200"}]
    assert requests and requests[0] >= 1
    assert any(name == "kepler_model_server_request_duration_seconds_bucket" and labels["route"] == "/model-weights"
               for name, labels, _ in exposed)
    assert any(name == "kepler_model_server_selections_total" for name, _, _ in exposed)


def test_probes_and_openapi(server: httpx.Client) -> None:
    assert server.get("/healthz").json() == {"status": "ok"}
    assert server.get("/readyz").json() == {"status": "ready"}
    pipelines = server.get("/pipelines").json()["pipelines"]
    assert [p["name"] for p in pipelines] == [PIPELINE] and pipelines[0]["models"] > 20
    paths = server.get("/openapi.json").json()["paths"]
    assert {"/model", "/best-models", "/models/{model_type}", "/model-weights/{model_type}", "/metrics",
            "/healthz", "/readyz"} <= set(paths)
    assert server.get("/no-such-route").status_code == 404


def test_readyz_waits_for_the_models_folder(tmp_path: Path, models_dir: Path) -> None:
    missing = tmp_path / "models"
    with ServerProcess(missing) as proc:
        answer = httpx.get(f"{proc.url}/readyz")
        assert answer.status_code == 503 and answer.json()["error"] == "NotReady"
        assert httpx.post(f"{proc.url}/model", json={"metrics": [], "output_type": "AbsPower"}).status_code == 503
        shutil.copytree(models_dir, missing)
        assert httpx.get(f"{proc.url}/readyz").status_code == 200
        assert httpx.get(f"{proc.url}/best-models").json()["AbsPower"]


@pytest.mark.parametrize("server_name", ["granian", "uvicorn"])
def test_two_workers_share_metrics(models_dir: Path, server_name: str) -> None:
    """Each worker batches its counts; every worker's requests reach /metrics within the flush delay."""
    needs(server_name)
    with ServerProcess(models_dir, "--http-server", server_name,
                       workers=2) as proc, httpx.Client(base_url=proc.url) as client:
        for _ in range(40):
            assert client.get("/model-weights/AbsPower", headers={"connection": "close"}).status_code == 200
        seen, deadline = [], time.monotonic() + 10
        while seen != [40] and time.monotonic() < deadline:
            time.sleep(RequestMetrics.FLUSH_DELAY)
            seen = [v for name, labels, v in samples(client.get("/metrics").text)
                    if name == "kepler_model_server_requests_total"
                    and labels == {"method": "GET", "route": "/model-weights", "status": "200"}]
            assert not seen or seen[0] <= 40
    assert seen == [40]


def test_kepler_model_serve_command(models_dir: Path) -> None:
    """The CLI entry point (`kepler-model serve`) runs the same server."""
    command = (sys.executable, "-m", "kepler_trainer.cli", "serve")
    with ServerProcess(models_dir, command=command) as proc:
        assert httpx.get(f"{proc.url}/readyz").status_code == 200
        assert httpx.get(f"{proc.url}/best-models").json()["AbsPower"]
