"""The query builder: PromQL selectors for the wanted metrics, and the chunks of the evaluation grid.

Pure functions of the settings (no I/O), so property tests can cover them exhaustively. Label
filters go into every selector, so Prometheus never sends a series that would be dropped here.
Chunks are consecutive slices of one grid (start + k * step) of at most `max_points` points each
(Prometheus refuses more than 11,000 per series), counted in integer milliseconds as Prometheus
counts them, so stitching the answers never creates a gap or a duplicate.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from ._settings import LabelMatcher, MetricSelection, QueryWindow, promql_string


def selector(metric: str, filters: Iterable[LabelMatcher] = ()) -> str:
    """`metric{filters}`: the filters go into the selector so Prometheus never sends other series."""
    inner = ",".join(f.promql() for f in filters)
    return f"{metric}{{{inner}}}" if inner else metric


def discovery_matchers(selection: MetricSelection) -> list[str]:
    """`match[]` selectors that narrow metric discovery to the prefix and the third-party names."""
    filters = [f.promql() for f in selection.label_filters]
    prefix = re.escape(selection.metric_prefix).replace("\\", "\\\\")  # RE2 inside a PromQL string
    matchers = [",".join([f'__name__=~"{prefix}.*"', *filters])]
    matchers += [",".join([f"__name__={promql_string(m)}", *filters]) for m in selection.thirdparty_metrics]
    return [f"{{{m}}}" for m in matchers]


def chunk_windows(window: QueryWindow) -> list[tuple[int, int]]:
    """[first, last] point indexes of each chunk: consecutive, disjoint, at most max_points each."""
    points = window.points
    return [(first, min(first + window.max_points, points) - 1) for first in range(0, points, window.max_points)]


def range_params(query: str, start_ms: int, end_ms: int, step_ms: int) -> dict[str, str]:
    """The query_range parameters of one chunk (seconds with millisecond precision)."""
    return {"query": query, "start": f"{start_ms / 1000:.3f}", "end": f"{end_ms / 1000:.3f}",
            "step": f"{step_ms / 1000:.3f}"}
