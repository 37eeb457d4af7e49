"""The app factory: FastAPI for the routes and the OpenAPI document, a thin layer in front.

The front layer (`Front`, the outermost middleware) does for every HTTP request what must not be
skipped: the body size limit (413 before the body is read past the limit), request counters and
latencies, and error translation. With the fast path on (the default) it also answers the hot
routes itself through `Service.answer`, as FastAPI's routes do: that skips FastAPI's routing and
dependency machinery, which costs several times the handler itself for a 2 kB weight answer.
It speaks ASGI (uvicorn, in-process clients) and granian's RSGI.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from prometheus_client import CollectorRegistry, disable_created_metrics
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import rsgi, table
from .catalog import Catalog
from .errors import BodyTooLarge, InvalidRequest, ServeError
from .metrics import RequestMetrics, exposition
from .onnx_routes import build_onnx_router
from .routes import Reply, Service, build_router, error_reply, to_response
from .schema import describe_validation_error
from .table import label_of as route_of

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
EXPOSITION = "text/plain; version=0.0.4; charset=utf-8"
DEFAULT_MAX_BODY_BYTES = 64 * 1024
"""Kepler's POST /model body is under 2 kB; anything near this limit is not a model request."""


def create_asgi(models_dir: Path, *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, fast_path: bool = True,
                **options: Any) -> Front:
    """What the HTTP server runs: Front outermost, so the fast path skips every FastAPI layer."""
    app = create_app(models_dir, front=False, **options)
    return Front(app, app.state.service, max_body_bytes, fast_path)


def create_app(models_dir: Path, *, default_pipeline: str | None = None,
               max_body_bytes: int = DEFAULT_MAX_BODY_BYTES, fast_path: bool = True,
               racy_window: float = 1.0, rescan_interval: float = 5.0, front: bool = True) -> FastAPI:
    """The model server over `models_dir` (read-only; nothing is written there).

    With `front` (the default) the Front layer is installed as FastAPI's outermost middleware;
    `create_asgi` instead wraps the app in it, which saves FastAPI's own layers on hot routes.
    """
    disable_created_metrics()  # type: ignore[no-untyped-call]  # the *_created series only double the exposition
    catalog = Catalog(Path(models_dir), racy_window=racy_window, rescan_interval=rescan_interval)
    registry = CollectorRegistry()
    service = Service(catalog, RequestMetrics(registry), default_pipeline)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        _read_models_folder(catalog)
        yield
        service.metrics.flush()

    app = FastAPI(title="Kepler model server", version="0.1.0", lifespan=lifespan,
                  description="Serves the power models published under the models folder to Kepler.")
    app.state.service = service
    app.include_router(build_router(lambda request: request.app.state.service))
    app.include_router(build_onnx_router(Path(models_dir)))

    async def metrics() -> Response:
        service.metrics.flush()  # this worker's latest requests; other workers' within FLUSH_DELAY
        return Response(exposition(catalog, registry), media_type=EXPOSITION)

    app.include_router(_router_of({"/metrics": metrics}, {"/metrics": {200: {"content": {EXPOSITION: {}}}}}))

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, exc: ServeError) -> Response:
        return to_response(error_reply(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        reason = "NotFound" if exc.status_code == 404 else "HTTPError"
        return Response(orjson.dumps({"error": reason, "message": str(exc.detail)}), exc.status_code,
                        media_type="application/json", headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        return to_response(error_reply(InvalidRequest(describe_validation_error(list(exc.errors())))))

    if front:
        app.add_middleware(Front, service=service, max_body_bytes=max_body_bytes, fast_path=fast_path)
    return app


def _router_of(handlers: dict[str, Callable[..., Any]], responses: dict[str, table.Responses]) -> APIRouter:
    router = APIRouter()
    table.register(router, handlers, responses)
    return router


class Front:
    """Outermost layer: body limit, metrics, error translation, and the fast path.

    It speaks ASGI (`__call__`: uvicorn, in-process clients) and granian's RSGI (`__rsgi__`),
    which hands a request over with less per-request work than granian's ASGI emulation; routes
    the fast path does not answer are bridged to FastAPI (`rsgi.py`).
    """

    def __init__(self, app: ASGIApp, service: Service, max_body_bytes: int, fast_path: bool) -> None:
        self.app = app
        self.service = service
        self.max_body_bytes = max_body_bytes
        self.fast_path = fast_path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        method, path = scope["method"], scope["path"]
        status = 500
        try:
            body = await self._asgi_body(scope, receive) if method in BODY_METHODS else None
            query = scope.get("query_string", b"").decode("latin-1")
            reply = self.service.answer(method, path, query, body) if self.fast_path else None
            if reply is not None:
                status = reply.status
                await _send_reply(send, reply)
            else:
                status = await self._forward(scope, receive, send, body)
        except ServeError as exc:
            status = exc.status
            await _send_reply(send, error_reply(exc))
        finally:
            self.service.metrics.observe(route_of(method, path), method, status, time.perf_counter() - started)

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        started = time.perf_counter()
        method, path = scope.method, scope.path
        status = 500
        try:
            body = await self._rsgi_body(scope, proto) if method in BODY_METHODS else None
            reply = self.service.answer(method, path, scope.query_string, body) if self.fast_path else None
            if reply is not None:
                status = reply.status
                proto.response_bytes(status, reply.rsgi_headers, reply.body)
            else:
                status = await rsgi.forward(self.app, scope, proto, body)
        except ServeError as exc:
            status = exc.status
            reply = error_reply(exc)
            proto.response_bytes(status, reply.rsgi_headers, reply.body)
        finally:
            self.service.metrics.observe(route_of(method, path), method, status, time.perf_counter() - started)

    def __rsgi_init__(self, loop: Any) -> None:
        """Granian calls this once per worker before serving (RSGI has no lifespan events)."""
        _read_models_folder(self.service.catalog)

    def __rsgi_del__(self, loop: Any) -> None:
        self.service.metrics.flush()

    def _check_declared_length(self, value: bytes | str | None) -> None:
        if value is None:
            return
        try:
            declared = int(value)
        except ValueError:
            raise InvalidRequest("invalid Content-Length") from None
        if declared > self.max_body_bytes:
            raise BodyTooLarge(f"the body has {declared} bytes; the limit is {self.max_body_bytes}")

    async def _asgi_body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body, refused with 413 once it exceeds the limit (declared or streamed)."""
        self._check_declared_length(next((v for k, v in scope.get("headers", ()) if k == b"content-length"), None))
        return await self._gather(_asgi_chunks(receive))

    async def _rsgi_body(self, scope: Any, proto: Any) -> bytes:
        declared = scope.headers.get("content-length")
        self._check_declared_length(declared)
        if declared is not None:  # the framing bounds what granian reads, and it was checked above
            body: bytes = await proto()
            return body
        return await self._gather(proto)  # chunked transfer

    async def _gather(self, chunks: AsyncIterator[bytes]) -> bytes:
        """Join a streamed body, counting as it comes: 413 as soon as it passes the limit."""
        parts, size = [], 0
        async for chunk in chunks:
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge(f"the body exceeds the limit of {self.max_body_bytes} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def _forward(self, scope: Scope, receive: Receive, send: Send, body: bytes | None) -> int:
        """Let FastAPI answer (the body, already read, is replayed); returns the status it sent."""
        status = 500
        if body is not None:
            replayed = False

            async def receive() -> Message:
                nonlocal replayed
                if not replayed:
                    replayed = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return {"type": "http.disconnect"}

        async def send_watching(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, send_watching)
        return status


async def _asgi_chunks(receive: Receive) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def _read_models_folder(catalog: Catalog) -> None:
    """Read the folder before the first request, so /readyz is right at once."""
    catalog.snapshot()
    if catalog.ready:
        log.info("models folder %s: %d pipelines", catalog.root, len(catalog.snapshot().pipelines))
    else:
        log.warning("not ready: %s", catalog.error)


async def _send_reply(send: Send, reply: Reply) -> None:
    await send({"type": "http.response.start", "status": reply.status, "headers": reply.asgi_headers})
    await send({"type": "http.response.body", "body": reply.body})
