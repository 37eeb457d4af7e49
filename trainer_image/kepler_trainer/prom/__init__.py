"""Kepler's metrics over a time window, straight from Prometheus (`kepler-model query`, `-s` of train/estimate).

The flow: discover the metric names that carry the prefix, then range-query every metric over the
window, split into chunks of at most 11,000 points per series (Prometheus refuses more), run the
chunk requests concurrently with a bound, and stitch the chunks back into one `Series` per label
set.

Layers, each a private module that imports only the ones above it:
  _settings  typed, frozen settings (server, window, metric selection) and text -> time parsing
  _promql    the query builder: selectors, discovery matchers, chunks of the evaluation grid (pure)
  _http      the client: session, TLS, token, retries, timeouts; HTTP failures -> errors.py
  _fetch     discovery, concurrent chunked range queries, stitching, the `query` command's work
Answers are read by `promjson.read_answer`, the same reader as the query-output files. The command
line (`cli.py`) owns the flags and builds `PromSettings` from them: nothing here knows argparse.
"""

from __future__ import annotations

from ._fetch import MetricFilter, fetch, fetch_queries, output_path, write_query
from ._promql import chunk_windows, selector
from ._settings import (
    DEFAULT_SERVER,
    MAX_POINTS_PER_SERIES,
    LabelMatcher,
    MetricSelection,
    PrometheusSettings,
    PromSettings,
    QueryWindow,
    parse_seconds,
    parse_time,
    read_window,
)

__all__ = [
    "DEFAULT_SERVER", "MAX_POINTS_PER_SERIES", "LabelMatcher", "MetricFilter", "MetricSelection", "PromSettings",
    "PrometheusSettings", "QueryWindow", "chunk_windows", "fetch", "fetch_queries", "output_path", "parse_seconds",
    "parse_time", "read_window", "selector", "write_query",
]
