"""Prometheus exposition: the served models (errors and weights) and the server's own traffic.

Model gauges are computed at scrape time from the catalog, so they follow publishes without
bookkeeping. Request counters and latency histograms are prometheus-client metrics, fed in
batches (`RequestMetrics`); with several workers, prometheus-client's multiprocess mode
(PROMETHEUS_MULTIPROC_DIR, set by `run`) sums them across workers.
"""

from __future__ import annotations

import asyncio
import math
import os
from bisect import bisect_left
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .catalog import Catalog, ModelEntry

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
MODEL_LABELS = ["pipeline", "source", "output_type", "feature_group", "model"]


def follow_multiprocess_setting() -> None:
    """Store metric values in PROMETHEUS_MULTIPROC_DIR when it is set, even if prometheus-client was
    imported before it was (granian forks its workers from the process that set it)."""
    from prometheus_client import values

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]


class RequestMetrics:
    """Counters and latencies of the server's own requests, labelled by route template.

    A request only bumps plain Python counters; they are added to the prometheus-client metrics
    (shared files across workers in multiprocess mode) at most FLUSH_DELAY seconds later, and
    before this worker's own exposition. Per request that is a dict update instead of three
    locked writes to memory-mapped files, about a third of a cached answer's cost.
    """

    FLUSH_DELAY = 0.2

    def __init__(self, registry: CollectorRegistry) -> None:
        follow_multiprocess_setting()
        self.requests = Counter("kepler_model_server_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=registry)
        self.latency = Histogram("kepler_model_server_request_duration_seconds",
                                 "Time to answer a request", ["route"], buckets=LATENCY_BUCKETS,
                                 registry=registry)
        self.selections = Counter("kepler_model_server_selections",
                                  "Models chosen by selection requests (POST /model, short names)",
                                  [*MODEL_LABELS, "node_type_match"], registry=registry)
        self._bounds = (*LATENCY_BUCKETS, math.inf)
        self._counts: dict[tuple[str, str, int], int] = {}
        self._latencies: dict[str, list[float]] = {}  # route -> count per bucket, then the sum
        self._selections: dict[tuple[int, str], list[Any]] = {}  # (id(entry), match) -> [entry, match, n]
        self._flush_scheduled = False

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        self._counts[key] = self._counts.get(key, 0) + 1
        latency = self._latencies.get(route)
        if latency is None:
            latency = self._latencies[route] = [0] * len(self._bounds) + [0.0]
        latency[bisect_left(self._bounds, seconds)] += 1
        latency[-1] += seconds
        if not self._flush_scheduled:
            self._schedule_flush()

    def selected(self, entry: ModelEntry, node_type_match: str) -> None:
        # Keyed by identity: the entry stays referenced until the flush, so its id stays unique.
        pending = self._selections.get((id(entry), node_type_match))
        if pending is None:
            self._selections[(id(entry), node_type_match)] = [entry, node_type_match, 1]
        else:
            pending[2] += 1

    def flush(self) -> None:
        """Add the counts gathered since the last flush to the prometheus-client metrics."""
        self._flush_scheduled = False
        counts, self._counts = self._counts, {}
        latencies, self._latencies = self._latencies, {}
        selections, self._selections = self._selections, {}
        for (route, method, status), n in counts.items():
            self.requests.labels(route, method, str(status)).inc(n)
        for route, buckets in latencies.items():
            _add_observations(self.latency.labels(route), buckets[:-1], buckets[-1])
        for entry, node_type_match, n in selections.values():
            self.selections.labels(*_model_labels(entry), node_type_match).inc(n)

    def _schedule_flush(self) -> None:
        self._flush_scheduled = True
        try:
            asyncio.get_running_loop().call_later(self.FLUSH_DELAY, self.flush)
        except RuntimeError:  # no event loop (a handler called directly): nothing to batch with
            self.flush()


def _add_observations(child: Histogram, per_bucket: list[float], total: float) -> None:
    """Add many observations at once: n in bucket i, summing to `total`.

    prometheus-client has no batch observe; this writes the same values `observe()` writes, one
    bucket (not cumulative) per observation and the sum (`tests/unit/kepler_model_server/test_app.py` compares).
    """
    child._sum.inc(total)
    for bucket, n in zip(child._buckets, per_bucket, strict=False):
        if n:
            bucket.inc(n)


class ModelCollector(Collector):
    """The catalog's models as gauges: errors, linear and curve-fit weights, feature scales."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def collect(self) -> Iterator[Metric]:
        snapshot = self.catalog.snapshot()
        pipelines = GaugeMetricFamily("kepler_model_server_pipeline_models", "Models served per pipeline",
                                      labels=["pipeline"])
        for name, pipeline in snapshot.pipelines.items():
            pipelines.add_metric([name], len(pipeline.models))
        rejected = GaugeMetricFamily("kepler_model_server_rejected_models", "Models of a served pipeline "
                                     "skipped because an artefact failed validation (see the server log)",
                                     labels=["pipeline", "reason"])
        for name, pipeline in snapshot.pipelines.items():
            for reason, count in sorted(pipeline.rejected.items()):
                rejected.add_metric([name, reason], count)
        ready = GaugeMetricFamily("kepler_model_server_ready", "1 once the models folder has been read")
        ready.add_metric([], 1.0 if self.catalog.ready else 0.0)
        mae = GaugeMetricFamily("kepler_model_mae_watts", "Test mean absolute error of a served model"
                                " (component=all: the largest component MAE, used for selection)",
                                labels=[*MODEL_LABELS, "component"])
        weight = GaugeMetricFamily("kepler_model_weight", "Linear weight of a feature (on the scaled value)",
                                   labels=[*MODEL_LABELS, "component", "feature"])
        scale = GaugeMetricFamily("kepler_model_feature_scale", "Scale a feature is divided by before weighting",
                                  labels=[*MODEL_LABELS, "component", "feature"])
        bias = GaugeMetricFamily("kepler_model_bias_weight", "Intercept of a linear model",
                                 labels=[*MODEL_LABELS, "component"])
        curve = GaugeMetricFamily("kepler_model_curvefit_weight", "Fitted parameter of a curve-fit model",
                                  labels=[*MODEL_LABELS, "component", "index"])
        for entry in snapshot.models():
            labels = _model_labels(entry)
            mae.add_metric([*labels, "all"], entry.mae)
            for key, value in entry.metadata.items():
                if key.endswith("_mae") and _number(value):
                    mae.add_metric([*labels, key[:-4]], float(value))
            for component, all_weights in _components(entry.weight):
                if _number(all_weights.get("Bias_Weight")):
                    bias.add_metric([*labels, component], float(all_weights["Bias_Weight"]))
                variables = all_weights.get("Numerical_Variables")
                for feature, values in (variables.items() if isinstance(variables, dict) else ()):
                    if not isinstance(values, dict):
                        continue
                    if _number(values.get("weight")):
                        weight.add_metric([*labels, component, str(feature)], float(values["weight"]))
                    if _number(values.get("scale")):
                        scale.add_metric([*labels, component, str(feature)], float(values["scale"]))
                params = all_weights.get("CurveFit_Weights")
                for i, value in enumerate(params if isinstance(params, list) else ()):
                    if _number(value):
                        curve.add_metric([*labels, component, str(i)], float(value))
        yield from (ready, pipelines, rejected, mae, weight, scale, bias, curve)


def exposition(catalog: Catalog, registry: CollectorRegistry) -> bytes:
    """The /metrics body: this worker's registry, or every worker's in multiprocess mode."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    scrape = CollectorRegistry()
    scrape.register(_Union(registry, ModelCollector(catalog)))
    return generate_latest(scrape)


class _Union(Collector):
    def __init__(self, registry: CollectorRegistry, extra: Collector) -> None:
        self.registry, self.extra = registry, extra

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
        yield from self.extra.collect()


def _model_labels(entry: ModelEntry) -> list[str]:
    return [entry.pipeline, entry.source, entry.output_type, entry.feature_group, entry.model_name]


def _components(weight: dict[str, Any] | None) -> Iterator[tuple[str, dict[str, Any]]]:
    for component, value in (weight or {}).items():
        if isinstance(value, dict) and isinstance(value.get("All_Weights"), dict):
            yield component, value["All_Weights"]


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
