"""`/metrics` (prometheus-client's text format from one `State`), `/healthz` and `/readyz`."""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from .evaluator import Exporter

PREFIX = "kepler_model_exporter"


class StateCollector:
    def __init__(self, exporter: Exporter):
        self.exporter = exporter

    def collect(self):
        state = self.exporter.state  # one reference: everything below is from the same evaluation and model
        m = state.model
        labels = ["pipeline", "model", "zone"]
        watts = GaugeMetricFamily("kepler_model_estimated_watts", "Power estimated by the model over the last "
                                  "interval, per zone", labels=labels)
        for zone, value in state.watts.items():
            watts.add_metric([m.pipeline, m.name, zone], value)
        joules = CounterMetricFamily("kepler_model_estimated_joules", "Energy: the estimated power integrated over "
                                     "the intervals evaluated (gaps add nothing)", labels=labels)
        for (pipeline, name, zone), value in state.joules.items():
            if (pipeline, name) == (m.pipeline, m.name):
                joules.add_metric([pipeline, name, zone], value)
        info = InfoMetricFamily(f"{PREFIX}_model", "The model in use", labels=[])
        info.add_metric([], {"pipeline": m.pipeline, "model": m.name, "sha256": m.sha256,
                             "inputs": ",".join(i.name for i in m.inputs)})
        inputs = GaugeMetricFamily(f"{PREFIX}_input", "The model's inputs at the last evaluation, as the "
                                   "manifest defines them (rate, scale)", labels=["input"])
        for name, value in state.inputs.items():
            inputs.add_metric([name], value)
        gaps = CounterMetricFamily(f"{PREFIX}_gaps", "Intervals not evaluated, by reason", labels=["reason"])
        for reason in ("missing_field", "counter_reset", "clock"):
            gaps.add_metric([reason], state.gaps.get(reason, 0))
        yield from (watts, joules, info, inputs, gaps)
        yield GaugeMetricFamily(f"{PREFIX}_model_loaded_timestamp_seconds", "When the model in use was (re)loaded",
                                value=state.loaded_at)
        if state.evaluated_at is not None:
            yield GaugeMetricFamily(f"{PREFIX}_last_evaluation_timestamp_seconds", "When power was last estimated",
                                    value=state.evaluated_at)
        yield CounterMetricFamily(f"{PREFIX}_evaluations", "Successful evaluations", value=state.evaluations)
        yield CounterMetricFamily(f"{PREFIX}_evaluation_errors", "Evaluations that failed or gave no finite, "
                                  "non-negative power", value=state.evaluation_errors)
        yield CounterMetricFamily(f"{PREFIX}_reload_failures", "New models refused (the last good one is kept)",
                                  value=state.reload_failures)


def serve(exporter: Exporter, address: str, port: int) -> ThreadingHTTPServer:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(exporter))
    ProcessCollector(registry=registry)
    stale_after = max(3 * exporter.interval, 10.0)

    class Handler(BaseHTTPRequestHandler):
        server_version = "kepler-model-exporter"
        timeout = 10  # seconds: a client that connects and sends nothing does not hold a thread for ever

        def do_GET(self):  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                return self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            if path == "/healthz":
                return self._reply(200, b"ok\n")
            if path == "/readyz":
                state = exporter.state
                fresh = state.evaluated_at is not None and time.time() - state.evaluated_at < stale_after
                return self._reply(200, b"ready\n") if fresh else self._reply(503, b"no recent estimate\n")
            return self._reply(404, b"not found: /metrics, /healthz, /readyz\n")

        def _reply(self, code: int, body: bytes, content_type: str = "text/plain; charset=utf-8") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # scrapes are not news
            pass

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    return server
