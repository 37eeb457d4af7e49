"""kepler_model_server: the model server over the pipelines published in a models folder.

Its own package beside the trainer: it imports `kepler_contract` and its web stack (FastAPI, pydantic,
granian or uvicorn, prometheus-client), never `kepler_trainer` or the scientific stack, so it runs from
the slim server image. `kepler-model-server` (`__main__`) and the trainer's `kepler-model serve` both call
`add_arguments(parser)` to declare the options and `run(args)` to serve; tests build the app directly
with `create_app(models_dir)`. See docs/serve.md for routes and selection rules.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import orjson

from .app import DEFAULT_MAX_BODY_BYTES, Front, create_app, create_asgi

__all__ = ["add_arguments", "app_from_env", "create_app", "create_asgi", "run"]

CONFIG_ENV = "KEPLER_MODEL_SERVE_CONFIG"
"""How `run` hands the options to uvicorn's worker processes (they import `app_from_env`)."""
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
MAX_CONNECTIONS = 16384
BACKLOG = 4096
HEADER_TIMEOUT = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the serve options on `parser` (a subcommand parser of `kepler-model`)."""
    parser.add_argument("--models-dir", type=Path, default=Path(os.environ.get("MODEL_PATH") or "models"),
                        help="folder holding the published pipelines (default: $MODEL_PATH, else ./models)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1;"
                        " 0.0.0.0 in a container)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("MODEL_SERVER_PORT") or 8100),
                        help="port (default: $MODEL_SERVER_PORT, else 8100)")
    parser.add_argument("--workers", type=int, default=1, help="worker processes (default 1)")
    parser.add_argument("--default-pipeline", default=os.environ.get("KEPLER_MODEL_DEFAULT_PIPELINE") or None,
                        help="pipeline answering requests that name none (default: the most recently "
                        "trained pipeline having the energy source)")
    parser.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                        help=f"largest accepted request body (default {DEFAULT_MAX_BODY_BYTES}); larger: 413")
    parser.add_argument("--rescan-interval", type=float, default=5.0,
                        help="seconds between unconditional re-listings of the models folder (default 5)")
    parser.add_argument("--no-fast-path", dest="fast_path", action="store_false",
                        help="route every request through FastAPI (slower; for comparison)")
    parser.add_argument("--http-server", choices=("auto", "granian", "uvicorn"), default="auto",
                        help="HTTP server: granian (Rust, lower tail latency; the default when installed) "
                        "or uvicorn")
    parser.add_argument("--max-connections", type=int, default=MAX_CONNECTIONS,
                        help=f"granian: connections admitted per worker at once, idle ones included "
                        f"(default {MAX_CONNECTIONS})")
    parser.add_argument("--backlog", type=int, default=BACKLOG,
                        help=f"listen backlog: connections the kernel queues before they are accepted "
                        f"(default {BACKLOG}; capped by net.core.somaxconn)")
    parser.add_argument("--header-timeout", type=float, default=HEADER_TIMEOUT,
                        help=f"granian: seconds a connection may take to send its request headers "
                        f"(default {HEADER_TIMEOUT:g})")
    parser.add_argument("--access-log", action="store_true", help="log every request")
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS)


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; returns the exit code."""
    server = _server(args.http_server)
    if server is None:
        print("kepler-model serve: --http-server granian needs the granian package (pip install granian)",
              file=sys.stderr)
        return 2
    if args.workers < 1 or not 0 <= args.port <= 65535 or args.max_body_bytes < 1:
        print("kepler-model serve: --workers, --port and --max-body-bytes must be positive", file=sys.stderr)
        return 2
    if args.max_connections < 1 or args.backlog < 1 or not 0 < args.header_timeout < 3600:
        print("kepler-model serve: --max-connections and --backlog must be positive, --header-timeout "
              "between 0 and 3600 s", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _raise_open_files_limit()
    config = {
        "models_dir": str(args.models_dir), "default_pipeline": args.default_pipeline,
        "max_body_bytes": args.max_body_bytes, "fast_path": args.fast_path,
        "rescan_interval": args.rescan_interval,
    }
    os.environ[CONFIG_ENV] = orjson.dumps(config).decode()
    multiproc_dir = None
    if args.workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # Request metrics of all workers are summed from files here (a private temp dir, not the volume).
        multiproc_dir = tempfile.mkdtemp(prefix="kepler-model-serve-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = multiproc_dir
    try:
        if server == "granian":
            _serve_granian(args)
        else:
            _serve_uvicorn(args)
    finally:
        if multiproc_dir:
            shutil.rmtree(multiproc_dir, ignore_errors=True)
    return 0


def _raise_open_files_limit() -> None:
    """Each connection is a file descriptor: the soft limit (often 1024) would cap connections below
    --max-connections, and a server out of descriptors cannot accept even its health checks."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = MAX_CONNECTIONS * 2 if hard == resource.RLIM_INFINITY else min(hard, MAX_CONNECTIONS * 2)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def _server(choice: str) -> str | None:
    """The HTTP server to use; None when granian is asked for but not installed."""
    if choice == "uvicorn":
        return "uvicorn"
    try:
        import granian  # noqa: F401
    except ImportError:
        return None if choice == "granian" else "uvicorn"
    return "granian"


def _serve_granian(args: argparse.Namespace) -> None:
    import importlib.util

    from granian import Granian
    from granian.constants import Interfaces, Loops
    from granian.log import LogLevels

    # RSGI: granian's own interface, less work per request than its ASGI emulation (docs/serve.md).
    # uvloop named rather than "auto", which would take rloop whenever it happens to be installed:
    # rloop measured slower and far more erratic here.
    loop = Loops.uvloop if importlib.util.find_spec("uvloop") else Loops.asyncio
    Granian(f"{__name__}:app_from_env", factory=True, address=args.host, port=args.port,
            interface=Interfaces.RSGI, loop=loop, workers=args.workers, websockets=False,
            log_level=LogLevels(args.log_level), log_access=args.access_log,
            respawn_failed_workers=True, **_granian_limits(args)).serve()


def _granian_limits(args: argparse.Namespace) -> dict[str, Any]:
    """Idle clients must not starve the others. granian admits at most `backpressure`
    connections per worker at a time (default backlog / workers = 1024) and an admitted connection
    that sends nothing holds its slot until the header read timeout (default 30 s): 1,100 idle
    connections made every route time out. Admit far more (an idle connection costs a few KB in
    granian's Rust runtime; the process's file-descriptor limit bounds them anyway), let the kernel
    queue a burst of connects, and drop a connection that has not sent its headers in time."""
    from granian.http import HTTP1Settings

    return {"backlog": args.backlog, "backpressure": args.max_connections,
            "http1_settings": HTTP1Settings(header_read_timeout=int(args.header_timeout * 1000))}


def _serve_uvicorn(args: argparse.Namespace) -> None:
    import uvicorn

    uvicorn.run(f"{__name__}:app_from_env", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level, access_log=args.access_log,
                server_header=False, backlog=args.backlog)


def app_from_env() -> Front:
    """The ASGI app of a server worker, configured by `run` through the environment."""
    config = orjson.loads(os.environ[CONFIG_ENV])
    return create_asgi(Path(config.pop("models_dir")), **config)
