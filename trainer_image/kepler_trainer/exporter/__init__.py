"""`kepler-model exporter`: estimate power where it cannot be measured, from procfs and a published ONNX model.

It reads node-exporter's series from a procfs tree (`procfs`), computes the model's inputs exactly as the
model's ONNX manifest defines them (selector, counter rate or gauge, scale), evaluates the graph with
onnxruntime every interval (`evaluator`), and serves per-zone watts and joules with its own health on
`/metrics` (`server`). Light by design: numpy, onnxruntime and prometheus-client, nothing of the trainer's
scientific stack (a test checks `sys.modules`), so it ships as its own slim image (Dockerfile.exporter).
"""

from __future__ import annotations

import argparse
import logging
import re
import signal
import sys

from ..errors import UsageError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


def duration(text: str) -> float:
    """Seconds from '5s', '500ms', '1m' or '5'."""
    match = _DURATION.match(text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 5s, 500ms, 1m)")
    return float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, metavar="URL_OR_PATH",
                   help="a folder with onnx_manifest.json and model.onnx (e.g. a mounted ConfigMap), or the model "
                        "server's folder URL http://HOST:PORT/onnx/PIPELINE/SOURCE/TYPE/GROUP/MODEL")
    p.add_argument("--interval", type=duration, default=5.0, help="evaluation interval (default 5s)")
    p.add_argument("--reload-interval", type=duration, default=60.0,
                   help="how often a model URL's manifest is fetched to see a new model (default 60s; a folder "
                        "is checked every interval)")
    p.add_argument("--port", type=int, default=9102, help="HTTP port of /metrics, /healthz, /readyz (default 9102)")
    p.add_argument("--address", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    p.add_argument("--procfs", default="/proc", help="procfs root (default /proc; /host/proc in a container)")
    p.add_argument("--pipeline", default=None,
                   help="the pipeline label (default: read from the model's path or URL, 'unknown' otherwise)")


def run(args) -> dict:
    from . import evaluator, server  # onnxruntime and prometheus-client: only for this command
    from .model import pipeline_of

    if not 0.01 <= args.interval <= 3600 or not 1 <= args.reload_interval <= 86400:
        raise UsageError("--interval must be within 10ms..1h and --reload-interval within 1s..24h")
    if not 0 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: not a TCP port")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s kepler-model exporter: %(message)s")
    exporter = evaluator.Exporter(args.model, pipeline_of(args.model, args.pipeline), args.procfs, args.interval,
                                  args.reload_interval)
    try:
        http = server.serve(exporter, args.address, args.port)
    except OSError as exc:
        raise UsageError(f"cannot listen on {args.address}:{args.port}: {exc.strerror}") from None
    signal.signal(signal.SIGTERM, lambda *_: exporter.stop.set())
    logging.getLogger("kepler_model.exporter").info("serving /metrics on %s:%d every %gs", args.address,
                                                    http.server_address[1], args.interval)
    exporter.run()
    http.shutdown()
    return {"evaluations": exporter.state.evaluations}
