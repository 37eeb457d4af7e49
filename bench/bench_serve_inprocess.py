"""The model server's own cost per request, in process: CPU time of the app's front layer, no HTTP.

    python bench/bench_serve_inprocess.py [--requests 20000] [--repeats 7]

bench_serve.py measures the whole server over loopback HTTP, where on a shared, loaded machine the
rate swings by half from run to run. This drives the ASGI app that the HTTP server runs (`create_asgi`,
fast path on) directly with Kepler's two hot requests over bench_serve.py's pipeline: GET
/model-weights/<path> cycling through every weight path, and POST /model (weight) cycling through its
bodies. It times with the process's CPU clock, so time spent waiting for a CPU is not counted, and
prints the minimum and median microseconds per request over the repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import build_models, post_bodies  # noqa: E402

from kepler_model_server import create_asgi  # noqa: E402


def requests(paths: list[str]) -> dict[str, list[tuple[dict[str, Any], bytes]]]:
    """ASGI scopes and bodies of the two request kinds."""
    gets = [({"type": "http", "method": "GET", "path": p, "query_string": b"", "headers": []}, b"") for p in paths]
    posts = []
    for text in post_bodies(True):
        body = text.encode()
        posts.append(({"type": "http", "method": "POST", "path": "/model", "query_string": b"",
                       "headers": [(b"content-length", str(len(body)).encode())]}, body))
    return {"GET /model-weights": gets, "POST /model weight": posts}


async def drive(app: Any, batch: list[tuple[dict[str, Any], bytes]], n: int, statuses: dict[int, int]) -> None:
    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses[message["status"]] = statuses.get(message["status"], 0) + 1

    for i in range(n):
        scope, body = batch[i % len(batch)]

        async def receive(body: bytes = body) -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        await app(scope, receive, send)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000, help="requests per repeat")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-inprocess-") as tmp:
        models = Path(tmp) / "models"
        paths = build_models(models)
        time.sleep(1.5)  # past the catalog's racy window (1 s), inside which it re-lists a just-changed folder
        app = create_asgi(models)
        app.__rsgi_init__(None)  # read the models folder, as the server does before its first request
        for name, batch in requests(paths).items():
            statuses: dict[int, int] = {}
            asyncio.run(drive(app, batch, 2000, statuses))  # warm: every distinct request answered once
            per_request = []
            for _ in range(args.repeats):
                started = time.process_time()
                asyncio.run(drive(app, batch, args.requests, statuses))
                per_request.append((time.process_time() - started) / args.requests * 1e6)
            print(f"{name:20} {min(per_request):6.2f} us min, {statistics.median(per_request):6.2f} us median "
                  f"CPU per request ({args.repeats} x {args.requests}; statuses {dict(sorted(statuses.items()))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
