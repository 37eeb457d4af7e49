"""Bridge from granian's RSGI to an ASGI app, for the routes the fast path leaves to FastAPI.

Only what those routes need: one request body (already read by the front layer), a response
gathered whole (the OpenAPI document, /docs, /metrics and errors are small), no websockets.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Message = MutableMapping[str, Any]
ASGIApp = Callable[[MutableMapping[str, Any], Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]],
                   Awaitable[None]]


async def forward(app: ASGIApp, scope: Any, proto: Any, body: bytes | None) -> int:
    """Answer an RSGI request with `app`; returns the status sent."""
    status, headers, chunks = 500, [], []
    delivered = False

    async def receive() -> Message:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body or b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in message.get("headers", ())
                       if k.lower() != b"content-length"]  # granian frames the body itself
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(asgi_scope(scope), receive, send)
    proto.response_bytes(status, headers, b"".join(chunks))
    return status


def asgi_scope(scope: Any) -> dict[str, Any]:
    """The ASGI HTTP scope of an RSGI request scope (same decoded path, raw query string)."""
    query = scope.query_string
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": scope.http_version,
        "method": scope.method,
        "scheme": scope.scheme,
        "path": scope.path,
        "raw_path": scope.path.encode("utf-8"),
        "query_string": query.encode("latin-1") if isinstance(query, str) else query,
        "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in scope.headers.items()],
        "client": _address(scope.client),
        "server": _address(scope.server),
        "state": {},
    }


def _address(value: str | None) -> tuple[str, int] | None:
    """`host:port` (IPv6 hosts in brackets or bare) as ASGI's (host, port)."""
    if not value:
        return None
    host, _, port = value.rpartition(":")
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        return value, 0
