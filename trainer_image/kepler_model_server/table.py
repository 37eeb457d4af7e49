"""The route table: every route of the server, once.

What is derived from it: the FastAPI registrations (`register`, hence the OpenAPI document and its
query parameters), the metrics' route labels (`label_of`, a fixed set so a hostile path never makes a
new series) and the routes a test checks the app against. The handlers themselves live in routes.py,
onnx_routes.py and app.py and are looked up here by the route's label; a label without a handler, or a
handler without a route, fails when the app is built.

Query parameters are read by the handlers from the raw query string (the fast path never meets
FastAPI's parsing); the table declares them for the OpenAPI document only, so a handler's signature
declares none it would ignore.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Response

Responses = dict[int | str, dict[str, Any]]
"""A route's OpenAPI responses, by status."""


@dataclass(frozen=True, slots=True)
class QueryParam:
    """A query parameter as the OpenAPI document shows it (the handler validates it itself)."""

    name: str
    description: str
    type: str = "string"

    def openapi(self) -> dict[str, Any]:
        return {"name": self.name, "in": "query", "required": False, "description": self.description,
                "schema": {"type": self.type}}


@dataclass(frozen=True, slots=True)
class Route:
    """One route: its method and FastAPI path template, its metrics label, what it answers."""

    method: str
    template: str
    label: str
    summary: str
    query: tuple[QueryParam, ...] = ()

    @property
    def prefix(self) -> str:
        """The fixed text before the first path parameter (the whole path when it has none)."""
        return self.template.split("{", 1)[0]

    @property
    def suffix(self) -> str:
        """The fixed text after the last path parameter ("" when it has none or ends with one)."""
        return self.template.rsplit("}", 1)[1] if "}" in self.template else ""


_SOURCE = QueryParam("energy-source", "Energy source (rapl, intel_rapl and empty mean rapl-sysfs)")
_FEATURE_GROUP = QueryParam("feature-group", "Only models of this feature group")
_NODE_TYPE = QueryParam("node-type", "Only this node type (-1: any)", "integer")
_FILTER = QueryParam("filter", "key:value;... metadata thresholds, or features:a,b")
_PIPELINE = QueryParam("pipeline-name", "Only this pipeline (else the default pipeline for the source)")
BY_SHORT_NAME = (
    _SOURCE, QueryParam("source", "Same as energy-source (read when energy-source is absent)"),
    QueryParam("metrics", "Comma list of available features; models needing others are skipped"),
    _FEATURE_GROUP, _NODE_TYPE, QueryParam("trainer-name", "Only this trainer (trainer or model name)"),
    _FILTER, _PIPELINE,
)
"""Read only for a short name (AbsPower, DynPower); a model path names one model and reads none."""

ROUTES = (
    Route("POST", "/model", "/model", "Select the best model for a node and answer its zip or weights"),
    Route("GET", "/best-models", "/best-models",
          "The lowest-MAE model name per output type and feature group; under kepler_weights, the best each "
          "group has that Kepler runs from weights (null: sidecar only)",
          (_SOURCE, QueryParam("output-type", "AbsPower or DynPower (default: both)"), _FEATURE_GROUP,
           _NODE_TYPE, _FILTER, _PIPELINE)),
    Route("GET", "/model-weights/{model_type:path}", "/model-weights",
          "A model's weight JSON, by path or the best for a short name", BY_SHORT_NAME),
    Route("GET", "/models/{model_type:path}", "/models",
          "A model's zip, by path or the best for a short name", BY_SHORT_NAME),
    Route("GET", "/pipelines/{name}/report", "/pipelines/report",
          "The report page of a pipeline: its models' held-out accuracy"),
    Route("GET", "/pipelines", "/pipelines", "The served pipelines"),
    Route("GET", "/onnx/{pipeline}/{source}/{output_type}/{group}/{model}/{which}", "/onnx",
          "A model's ONNX graph (which=model.onnx) or manifest (which=manifest)"),
    Route("GET", "/metrics", "/metrics", "Prometheus exposition: served models and request metrics"),
    Route("GET", "/healthz", "/healthz", "Liveness: the process answers"),
    Route("GET", "/readyz", "/readyz", "Readiness: the models folder has been read"),
)
FRAMEWORK_PATHS = ("/docs", "/openapi.json")
"""FastAPI's own pages: labelled by their path, registered by FastAPI."""
OTHER = "other"
PROBES = ("/healthz", "/readyz")
"""Liveness and readiness, as the manifests' probes and the image's health check ask them."""


def route(label: str) -> Route:
    """The route with this label (KeyError for none)."""
    return _BY_LABEL[label]


_BY_LABEL = {r.label: r for r in ROUTES}
_EXACT = {r.template: r.label for r in ROUTES if "{" not in r.template} | {p: p for p in FRAMEWORK_PATHS}
_PATTERNED = tuple((r.prefix, r.suffix, r.label) for r in ROUTES if "{" in r.template)
"""Precomputed: `label_of` runs on every request."""


def label_of(method: str, path: str) -> str:
    """The route label a request path belongs to, "other" for none (method-independent: a wrong
    method on a known route is still that route's answer, a 405): a path with parameters matches when
    it has the text before the first and after the last one. Kepler's requests repeat byte for byte,
    so the first `_SEEN_LIMIT` distinct paths are remembered (a flood of distinct paths only stops the
    remembering: the labels stay a fixed set)."""
    label = _SEEN.get(path)
    if label is None:
        label = _label(path)
        if len(_SEEN) < _SEEN_LIMIT:
            _SEEN[path] = label
    return label


_SEEN: dict[str, str] = {}
_SEEN_LIMIT = 4096


def _label(path: str) -> str:
    label = _EXACT.get(path)
    if label is not None:
        return label
    for prefix, suffix, label in _PATTERNED:
        if path.startswith(prefix) and path.endswith(suffix) and len(path) >= len(prefix):
            return label
    return OTHER


def register(router: APIRouter, handlers: Mapping[str, Callable[..., Any]], responses: Mapping[str, Responses]) -> None:
    """Add the table's routes whose label has a handler; `responses[label]` is its OpenAPI responses.
    A handler for a label the table lacks is an error (a route listed nowhere)."""
    unknown = set(handlers) - {r.label for r in ROUTES}
    if unknown:
        raise ValueError(f"handlers for routes missing from the table: {sorted(unknown)}")
    for route in ROUTES:
        handler = handlers.get(route.label)
        if handler is None:
            continue
        extra = {"parameters": [q.openapi() for q in route.query]} if route.query else None
        router.add_api_route(route.template, handler, methods=[route.method], summary=route.summary,
                             responses=responses.get(route.label), openapi_extra=extra, response_class=Response)
