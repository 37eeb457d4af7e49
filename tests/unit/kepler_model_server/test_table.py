"""The route table is the app's: every route registered from it, the OpenAPI document's query parameters
are the table's, metric labels come from it, and every declared query parameter is read by its handler
(a bad value is refused naming it) on the fast path and through FastAPI alike."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from kepler_model_server import create_app
from kepler_model_server.table import FRAMEWORK_PATHS, PROBES, ROUTES, label_of
from tests.support.server import FakeModel, publish

BAD_VALUE = {"energy-source": "..", "source": "..", "metrics": "no such!", "feature-group": "..",
             "node-type": "x", "trainer-name": "..", "filter": "nothing", "pipeline-name": "..",
             "output-type": "Watts"}
"""A value each query parameter's handler refuses (400)."""
EXAMPLE = {"model_type:path": "AbsPower", "name": "p", "which": "manifest"}


def example_path(template: str) -> str:
    parts = [EXAMPLE.get(part[1:-1], "x") if part.startswith("{") else part for part in template.split("/")]
    return "/".join(parts)


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory):
    models = tmp_path_factory.mktemp("models")
    publish(models, "p", [FakeModel("SGDRegressorTrainer", mae=1.0)])
    return create_app(models)


def test_the_app_has_exactly_the_tables_routes(app) -> None:
    documented = TestClient(app).get("/openapi.json").json()["paths"]
    registered = {(method.upper(), path) for path, operations in documented.items() for method in operations}
    assert registered == {(r.method, r.template.replace(":path", "")) for r in ROUTES}
    for route in ROUTES:
        operation = documented[route.template.replace(":path", "")][route.method.lower()]
        query = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
        assert query == [q.name for q in route.query], route.template


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: r.label)
def test_every_route_has_its_label(route) -> None:
    assert label_of(route.method, example_path(route.template)) == route.label


def test_framework_pages_and_unknown_paths_have_fixed_labels() -> None:
    assert [label_of("GET", p) for p in FRAMEWORK_PATHS] == list(FRAMEWORK_PATHS)
    assert {label_of("GET", p) for p in ("/modelsX", "/../etc", "/pipelines/p", "/onnx")} == {"other"}


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize(("route", "param"), [(r, q.name) for r in ROUTES for q in r.query],
                         ids=lambda v: getattr(v, "label", v))
def test_every_declared_query_parameter_is_read(tmp_path: Path, fast_path: bool, route, param: str) -> None:
    publish(tmp_path, "p", [FakeModel("SGDRegressorTrainer", mae=1.0)])
    with TestClient(create_app(tmp_path, fast_path=fast_path)) as client:
        path = example_path(route.template)
        assert client.get(path).status_code == 200
        refused = client.get(path, params={param: BAD_VALUE[param]})
    assert refused.status_code == 400, (param, refused.text)
    assert param in refused.text or BAD_VALUE[param] in refused.text


def test_the_manifests_probe_the_tables_probes() -> None:
    from tests.unit.manifests.test_render import find, render

    server = find(render("base"), "Deployment", "kepler-model-server")["spec"]["template"]["spec"]["containers"][0]
    probed = {server[probe]["httpGet"]["path"] for probe in ("readinessProbe", "livenessProbe")}
    assert probed == set(PROBES)


def test_a_flood_of_distinct_paths_leaves_labels_fixed_and_memory_bounded() -> None:
    from kepler_model_server import table

    labels = {label_of("GET", f"/models/flood/{i}") for i in range(table._SEEN_LIMIT + 100)}
    labels |= {label_of("GET", f"/flood/{i}") for i in range(100)}
    assert labels == {"/models", "other"} and len(table._SEEN) <= table._SEEN_LIMIT
    assert label_of("POST", "/model") == "/model" and label_of("GET", "/model-weights/a") == "/model-weights"
