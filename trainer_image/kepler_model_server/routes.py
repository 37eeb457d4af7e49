"""The routes: handlers from request parts to a Reply, and the FastAPI declarations over them.

Handlers take plain values (path, query mapping, body bytes) and return a Reply with precomputed
bytes, so the same code answers through FastAPI's router (documented in the OpenAPI document) and
through the app's fast path (app.py), which skips FastAPI's per-request machinery on hot routes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, Body, Path, Request, Response

from kepler_contract import layout

from . import table
from .catalog import Catalog, ModelEntry, Snapshot
from .errors import InvalidRequest, NotFound, NotReady, ServeError, StaleSnapshot
from .metrics import RequestMetrics
from .schema import (
    DEFAULT_SOURCE,
    FEATURE_PATTERN,
    OUTPUT_TYPES,
    ErrorBody,
    ModelRequest,
    canonical_source,
    check_name,
    check_output_type,
    parse_model_request,
)
from .selection import (
    Choice,
    Criteria,
    best_kepler_weights,
    best_models,
    choose_pipeline,
    parse_filter,
    select,
)

JSON = "application/json"
ZIP = "application/zip"
HTML = "text/html; charset=utf-8"
REPORT_PREFIX, REPORT_SUFFIX = table.route("/pipelines/report").prefix, table.route("/pipelines/report").suffix
REPORT_FILE = "report.html"
WEIGHTS_PREFIX, ZIPS_PREFIX = table.route("/model-weights").prefix, table.route("/models").prefix
REPORT_HEADERS = (("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'"),
                  ("X-Content-Type-Options", "nosniff"), ("Cache-Control", "no-cache"))
"""The report page runs nothing and fetches nothing; the policy makes the browser hold it to that."""
STALE_RETRIES = 3
PROBES = frozenset(table.PROBES)
MAX_CACHED_KEY = 4096
"""Bodies up to this size are cache keys (Kepler's are under 2 kB); larger ones are answered afresh."""
_FEATURE = re.compile(FEATURE_PATTERN)


@dataclass(frozen=True, slots=True)
class Reply:
    """A complete answer: status, media type, body bytes and extra headers (ASGI and RSGI forms
    precomputed), and for a selection the model chosen (counted each time the answer is sent)."""

    status: int
    body: bytes
    media_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()
    choice: Choice | None = field(default=None, repr=False, compare=False)
    asgi_headers: list[tuple[bytes, bytes]] = field(init=False, repr=False, compare=False)
    rsgi_headers: list[tuple[str, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        encoded = [(b"content-type", self.media_type.encode()), (b"content-length", b"%d" % len(self.body))]
        encoded += [(k.lower().encode(), v.encode("latin-1", "replace")) for k, v in self.headers]
        object.__setattr__(self, "asgi_headers", encoded)
        # RSGI takes str, and granian frames the body itself
        rsgi = [(k.decode(), v.decode("latin-1")) for k, v in encoded if k != b"content-length"]
        object.__setattr__(self, "rsgi_headers", rsgi)


def error_reply(exc: ServeError) -> Reply:
    return Reply(exc.status, orjson.dumps({"error": exc.reason, "message": str(exc)}))


class Service:
    """The handlers, over one catalog.

    `answer` takes a request as it arrived (method, path, raw query string, body) and looks it up
    in the current snapshot's answers first: Kepler's requests repeat byte for byte, so parsing,
    validating and selecting run once per snapshot and distinct request. The fast path and the
    FastAPI routes both call it.
    """

    def __init__(self, catalog: Catalog, metrics: RequestMetrics, default_pipeline: str | None = None) -> None:
        self.catalog = catalog
        self.metrics = metrics
        self.default_pipeline = default_pipeline

    def answer(self, method: str, path: str, raw_query: str = "", body: bytes | None = None) -> Reply | None:
        """The reply to a model route or probe; None when the request is for another route."""
        if method == "GET" and path in PROBES:
            return self.healthz() if path == "/healthz" else self.readyz()
        if method == "GET" and path.startswith(REPORT_PREFIX) and path.endswith(REPORT_SUFFIX):
            # never cached: `kepler-model report` may rewrite the page of a published pipeline in place
            name = check_name(path[len(REPORT_PREFIX):-len(REPORT_SUFFIX)], "pipeline name")
            return self._answer(None, lambda snapshot: self._report(snapshot, name))
        key = (method, path, raw_query, body) if body is None or len(body) <= MAX_CACHED_KEY else None
        reply = self.catalog.snapshot().answers.get(key) if key is not None else None
        if reply is None:
            work = self._work_for(method, path, raw_query, body)
            if work is None:
                return None
            reply = self._answer(key, work)
        return self._counted(reply)

    def answer_model_request(self, request: ModelRequest) -> Reply:
        """POST /model with a body already validated (FastAPI's route)."""
        return self._counted(self._answer(None, lambda snapshot: self._selected(snapshot, request)))

    def pipelines(self) -> Reply:
        snapshot = self.catalog.snapshot()
        listing = [
            {"name": p.name, "models": len(p.models), "sources": sorted(p.sources),
             "last_update_time": p.metadata.get("last_update_time"), "node_types": sorted(p.node_types)}
            for p in snapshot.pipelines.values()
        ]
        return Reply(200, orjson.dumps({"pipelines": listing}))

    def healthz(self) -> Reply:
        return Reply(200, b'{"status":"ok"}')

    def readyz(self) -> Reply:
        self.catalog.snapshot()
        if not self.catalog.ready:
            raise NotReady(self.catalog.error or "not ready")
        return Reply(200, b'{"status":"ready"}')

    def _work_for(self, method: str, path: str, raw_query: str,
                  body: bytes | None) -> Callable[[Snapshot], Reply] | None:
        """What answering the request takes, given a snapshot; None for a route not handled here."""
        if method == "GET":
            if path.startswith(WEIGHTS_PREFIX):
                return lambda snapshot: self._by_name(snapshot, path[len(WEIGHTS_PREFIX):], raw_query, True)
            if path.startswith(ZIPS_PREFIX):
                return lambda snapshot: self._by_name(snapshot, path[len(ZIPS_PREFIX):], raw_query, False)
            if path == "/best-models":
                return lambda snapshot: self._best_models(snapshot, raw_query)
        elif method == "POST" and path == "/model":
            return lambda snapshot: self._post_model(snapshot, body or b"")
        return None

    # -- the work behind each handler, on one snapshot -------------------------------------------
    def _post_model(self, snapshot: Snapshot, body: bytes) -> Reply:
        try:
            raw = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise InvalidRequest("the body is not valid JSON") from None
        return self._selected(snapshot, parse_model_request(raw))

    def _selected(self, snapshot: Snapshot, request: ModelRequest) -> Reply:
        if request.trainer_name:
            check_name(request.trainer_name, "trainer_name")
        if request.pipeline_name:
            check_name(request.pipeline_name, "pipeline_name")
        criteria = Criteria(
            source=canonical_source(check_name(request.source, "source") if request.source else ""),
            output_type=check_output_type(request.output_type),
            metrics=frozenset(request.metrics), trainer=request.trainer_name or None, weight=request.weight,
            conditions=parse_filter(request.filter), node_type=request.node_type,
            spec=request.machine_spec.attrs() if request.machine_spec else None,
            loose=request.loose_node_type,
            # Kepler 0.7.12 always sends machine_spec and reads model_name; 0.7.11 sends none and cannot
            # decode anything but the component map.
            trainer_from_answer=request.machine_spec is not None,
        )
        return self._chosen(snapshot, criteria, request.pipeline_name, request.weight)

    def _chosen(self, snapshot: Snapshot, criteria: Criteria, pipeline_name: str, weight: bool) -> Reply:
        pipeline = choose_pipeline(snapshot.pipelines, criteria.source, pipeline_name, self.default_pipeline)
        choice = select(pipeline, criteria)
        if weight:
            body = choice.entry.weight_answer if criteria.trainer_from_answer else choice.entry.weight_file
            return Reply(200, body or b"", JSON, _model_headers(choice.entry, choice), choice=choice)
        return self._zip(snapshot, choice.entry, choice)

    def _best_models(self, snapshot: Snapshot, raw_query: str) -> Reply:
        params = parse_query(raw_query)
        source = canonical_source(_name_param(params, "energy-source", DEFAULT_SOURCE))
        output_type = params.get("output-type")
        output_types = (check_output_type(output_type),) if output_type else OUTPUT_TYPES
        group = _name_param(params, "feature-group", "") or None
        node_type = _int_param(params, "node-type", -1)
        conditions = parse_filter(params.get("filter", ""))
        pipeline = choose_pipeline(snapshot.pipelines, source, _name_param(params, "pipeline-name", ""),
                                   self.default_pipeline)
        best: dict[str, Any] = best_models(pipeline, source, output_types, group, node_type, conditions)
        # Beside upstream's keys: per group, the best model Kepler's regressor runs from weights (docs/serve.md).
        best["kepler_weights"] = best_kepler_weights(pipeline, source, output_types, group, node_type, conditions)
        return Reply(200, orjson.dumps(best), JSON, (("X-Model-Pipeline", pipeline.name),))

    def _by_name(self, snapshot: Snapshot, model_type: str, raw_query: str, weight: bool) -> Reply:
        """GET /models/<model_type> (the zip) or /model-weights/<model_type> (the weight JSON)."""
        path, short = _split_model_type(model_type, ".json" if weight else ".zip")
        params = parse_query(raw_query)
        if short:
            criteria = _short_criteria(short, params, weight=weight)
            return self._chosen(snapshot, criteria, _name_param(params, "pipeline-name", ""), weight)
        entry = _lookup(snapshot, path)
        if not weight:
            return self._zip(snapshot, entry, None)
        if entry.weight_file is None:
            raise NotFound(f"model {path} has no weight file (only linear and curve-fit trainers have one)")
        if not entry.kepler_weights:
            raise NotFound(f"model {path} is not served as Kepler weights: "
                           f"{entry.metadata.get('kepler_weights_reason') or 'a curve fit over several features'}")
        # The plain component map: 0.7.11 decodes nothing else, 0.7.12 names the model after the URL.
        return Reply(200, entry.weight_file, JSON, _model_headers(entry, None))

    def _report(self, snapshot: Snapshot, name: str) -> Reply:
        """GET /pipelines/<name>/report: the page written when the pipeline was published."""
        pipeline = snapshot.pipelines.get(name)
        if pipeline is None:
            raise NotFound(f"no pipeline {name!r} is served")
        page = pipeline.read_page(REPORT_FILE)
        if page is not None:
            return Reply(200, page, HTML, REPORT_HEADERS)
        if not pipeline.has(layout.METADATA):
            raise StaleSnapshot(f"{name} was replaced")  # the whole version is gone: rescan
        raise NotFound(f"pipeline {name!r} has no report (published by an older trainer): "
                       f"run `kepler-model report -p {name}`")

    def _zip(self, snapshot: Snapshot, entry: ModelEntry, choice: Choice | None) -> Reply:
        if entry.zip_rel is None:
            raise NotFound(f"model {entry.path} has no zip archive")
        data = snapshot.pipelines[entry.pipeline].read(entry.zip_rel)
        headers = (*_model_headers(entry, choice),
                   ("Content-Disposition", f'attachment; filename="{entry.model_name}.zip"'))
        return Reply(200, data, ZIP, headers, choice=choice)

    def _counted(self, reply: Reply) -> Reply:
        """The reply, its selection (if any) counted: each time a selection is answered, cached or not."""
        if reply.choice is not None:
            self.metrics.selected(reply.choice.entry, reply.choice.node_type_match)
        return reply

    def _answer(self, key: Hashable | None, work: Callable[[Snapshot], Reply]) -> Reply:
        """`work` on the current snapshot, or its cached answer under `key`; when a pipeline vanished
        mid-request (StaleSnapshot), rescan and answer again."""
        for _ in range(STALE_RETRIES):
            snapshot = self.catalog.snapshot()
            if not self.catalog.ready:
                raise NotReady(self.catalog.error or "not ready")
            reply = snapshot.answers.get(key) if key is not None else None
            if reply is None:
                try:
                    reply = work(snapshot)
                except StaleSnapshot:
                    self.catalog.invalidate()
                    continue
                if key is not None:
                    snapshot.answers.put(key, reply, len(reply.body) if reply.media_type == ZIP else 0)
            return reply
        raise NotReady("the pipeline kept changing while it was read; retry")


def parse_query(raw: str) -> dict[str, str]:
    """A raw query string as a mapping, bounded in length and fields (400 beyond)."""
    if not raw:
        return {}
    if len(raw) > 8192:
        raise InvalidRequest("the query string is too long")
    try:
        return dict(parse_qsl(raw, keep_blank_values=True, max_num_fields=64))
    except ValueError as exc:
        raise InvalidRequest(f"invalid query string: {exc}") from None


def _model_headers(entry: ModelEntry, choice: Choice | None) -> tuple[tuple[str, str], ...]:
    headers: tuple[tuple[str, str], ...] = (
        ("X-Model-Name", entry.model_name), ("X-Model-Mae", repr(entry.mae)), ("X-Model-Path", entry.path))
    if choice is not None:
        headers += (("X-Model-Node-Type-Match", choice.node_type_match),)
    return headers


def _split_model_type(model_type: str, suffix: str) -> tuple[str, str | None]:
    """`<pipeline>/<source>/<ot>/<fg>/<model>[suffix]` -> (path, None); `AbsPower` -> ("", short name)."""
    parts = model_type.split("/")
    parts[-1] = parts[-1].removesuffix(suffix)
    for part in parts:
        check_name(part, "model path segment")
    if len(parts) == 1 and parts[0] in OUTPUT_TYPES:
        return "", parts[0]
    if len(parts) == 5:
        return "/".join(parts), None
    raise NotFound(f"unknown model {model_type[:200]!r}: use <pipeline>/<source>/<output type>/"
                   "<feature group>/<model> or a short name (AbsPower, DynPower)")


def _lookup(snapshot: Snapshot, path: str) -> ModelEntry:
    entry = snapshot.by_path.get(path)
    if entry is None:
        raise NotFound(f"model {path} is not served")
    return entry


def _short_criteria(output_type: str, params: Mapping[str, str], weight: bool) -> Criteria:
    metrics = params.get("metrics")
    return Criteria(
        source=canonical_source(_name_param(params, "energy-source", _name_param(params, "source", DEFAULT_SOURCE))),
        output_type=output_type,
        metrics=frozenset(_features(metrics)) if metrics is not None else None,
        feature_group=_name_param(params, "feature-group", "") or None,
        trainer=_name_param(params, "trainer-name", "") or None,
        weight=weight, conditions=parse_filter(params.get("filter", "")),
        node_type=_int_param(params, "node-type", -1),
        trainer_from_answer=False,  # an init URL named AbsPower.json tells Kepler no trainer
    )


def _features(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if len(names) > 512 or not all(_FEATURE.match(n) for n in names):
        raise InvalidRequest("metrics must be a comma list of feature names")
    return names


def _name_param(params: Mapping[str, str], key: str, default: str) -> str:
    value = params.get(key)
    return default if value is None or value == "" else check_name(value, key)


def _int_param(params: Mapping[str, str], key: str, default: int) -> int:
    value = params.get(key)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"{key} must be an integer") from None
    if not -1 <= number <= 999_999_999:
        raise InvalidRequest(f"{key} must be -1 or a node type index")
    return number


# -- FastAPI declarations: the OpenAPI document, and the path taken when the fast path is off --------

def to_response(reply: Reply) -> Response:
    return Response(reply.body, reply.status, dict(reply.headers), media_type=reply.media_type)


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "Invalid request, invalid name, or no model matches"},
    404: {"model": ErrorBody, "description": "No such model"},
    413: {"model": ErrorBody, "description": "Body larger than --max-body-bytes"},
    503: {"model": ErrorBody, "description": "The models folder has not been read"},
}
WEIGHT_OR_ZIP: dict[int | str, dict[str, Any]] = {200: {
    "description": "The model zip (application/zip; X-Model-Name and X-Model-Mae headers)"
                   " or, with weight=true, the weight JSON with model_name, mae and machine_spec keys",
    "content": {ZIP: {}, JSON: {}}}}
ModelType = Annotated[str, Path(description="`<pipeline>/<source>/<output type>/<feature group>/<model>` "
                                            "(optional suffix), or a short name: AbsPower or DynPower")]


def _answered(service: Service, request: Request, path: str) -> Response:
    """A GET model route through FastAPI: the same answer as the fast path gives. `path` is rebuilt
    from the route, not taken from the request, so a mounted app's prefix does not matter."""
    reply = service.answer("GET", path, request.scope.get("query_string", b"").decode("latin-1"))
    assert reply is not None, "FastAPI routed a path that Service.answer does not know"
    return to_response(reply)


def build_router(service_of: Callable[[Request], Service]) -> APIRouter:
    """The model routes and probes (table.py lists them; query parameters are read from the raw query
    string by the handlers, as on the fast path)."""
    async def post_model(request: Request, body: Annotated[ModelRequest, Body()]) -> Response:
        return to_response(service_of(request).answer_model_request(body))

    async def get_best_models(request: Request) -> Response:
        return _answered(service_of(request), request, "/best-models")

    async def get_model(request: Request, model_type: ModelType) -> Response:
        return _answered(service_of(request), request, f"/models/{model_type}")

    async def get_model_weights(request: Request, model_type: ModelType) -> Response:
        return _answered(service_of(request), request, f"/model-weights/{model_type}")

    async def get_report(request: Request, name: Annotated[str, Path(description="Pipeline name")]) -> Response:
        return _answered(service_of(request), request, f"/pipelines/{name}/report")

    async def get_pipelines(request: Request) -> Response:
        return to_response(service_of(request).pipelines())

    async def healthz(request: Request) -> Response:
        return to_response(service_of(request).healthz())

    async def readyz(request: Request) -> Response:
        return to_response(service_of(request).readyz())

    router = APIRouter()
    table.register(router, {
        "/model": post_model, "/best-models": get_best_models, "/models": get_model,
        "/model-weights": get_model_weights, "/pipelines/report": get_report, "/pipelines": get_pipelines,
        "/healthz": healthz, "/readyz": readyz,
    }, {
        "/model": {**WEIGHT_OR_ZIP, **ERRORS}, "/best-models": {200: {"content": {JSON: {}}}, **ERRORS},
        "/models": {200: {"content": {ZIP: {}}}, **ERRORS}, "/model-weights": {200: {"content": {JSON: {}}}, **ERRORS},
        "/pipelines/report": {200: {"content": {"text/html": {}}, "description": "The pipeline's report page"},
                              **ERRORS},
        "/pipelines": {200: {"content": {JSON: {}}}}, "/healthz": {200: {"content": {JSON: {}}}},
        "/readyz": {200: {"content": {JSON: {}}}, **ERRORS},
    })
    return router
