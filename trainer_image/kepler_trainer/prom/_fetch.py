"""Fetching: discover the metric names, range-query every metric chunk by chunk, stitch the chunks.

Chunk requests run concurrently with a bound (`PrometheusSettings.concurrency`): Prometheus
evaluates each on its own cores, and a bound keeps a small server from being flooded. The first
failure cancels what has not started. A chunk the server finds too big despite the point limit (its
sample limit, `--query.max-samples`) is halved until it passes or is a single point.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np

from .. import promjson
from ..data import QueryResult, Series
from ..errors import NoKeplerMetricsError, TooFewSamplesError
from ._http import Client, QueryRejected
from ._promql import chunk_windows, discovery_matchers, range_params, selector
from ._settings import PromSettings, QueryWindow, iso

log = logging.getLogger(__name__.rsplit(".", 1)[0])

_SPLITTABLE = ("too many samples", "maximum resolution")  # answers a smaller chunk can avoid

MetricFilter = Callable[[str], bool] | Collection[str] | None


def fetch(settings: PromSettings, *, metric_filter: MetricFilter = None) -> QueryResult:
    """Every metric with the prefix (and the third-party ones) over the window, one Series per label set."""
    with Client(settings) as client:
        names = _wanted(metric_names(client, settings), metric_filter)
        if not names:
            raise NoKeplerMetricsError(
                f"no metric named {settings.metric_prefix}* in {settings.server} over {settings.describe_window()}"
                + (f" with {', '.join(map(str, settings.label_filters))}" if settings.label_filters else ""))
        queries = {name: selector(name, settings.label_filters) for name in names}
        chunks = _fetch_chunks(client, settings, queries)
    result = QueryResult({name: series for name, series in chunks.items() if series})
    longest = max((len(s) for ss in result.metrics.values() for s in ss), default=0)
    if longest < 2:
        raise TooFewSamplesError(
            f"too few samples in {settings.describe_window()}: the longest series has {longest} point(s) "
            f"across {len(names)} metric(s); widen the window or check the label filters")
    log.info("fetched %d metrics, %d series, %d samples", len(result.metrics),
             sum(map(len, result.metrics.values())), result.sample_count)
    return result


def fetch_queries(settings: PromSettings, queries: list[str]) -> dict[str, list[Series]]:
    """Each PromQL query (as written, without the label filters) over the window, chunked like `fetch`."""
    with Client(settings) as client:
        return _fetch_chunks(client, settings, {query: query for query in queries})


def metric_names(client: Client, settings: PromSettings) -> list[str]:
    """The names with the prefix, and the third-party ones, that have series in the window."""
    names = client.label_values("__name__", discovery_matchers(settings), settings.start, settings.end)
    prefix, extra = settings.metric_prefix, set(settings.thirdparty_metrics)
    return sorted(n for n in names if n.startswith(prefix) or n in extra)


def _wanted(names: list[str], metric_filter: MetricFilter) -> list[str]:
    if metric_filter is None:
        return names
    keep = metric_filter if callable(metric_filter) else set(metric_filter).__contains__
    return [n for n in names if keep(n)]


def _fetch_chunks(client: Client, window: QueryWindow, queries: dict[str, str]) -> dict[str, list[Series]]:
    """key -> its query's series over the whole window; requests run `concurrency` at a time."""
    start_ms, _, step_ms = window.grid()
    windows = chunk_windows(window)
    parts: dict[str, list[list[Series]]] = {key: [[] for _ in windows] for key in queries}

    def one(key: str, index: int) -> None:
        first, last = windows[index]
        parts[key][index] = _query_points(client, queries[key], start_ms, step_ms, first, last)

    _run_bounded([(key, i) for key in queries for i in range(len(windows))], one, client.settings.concurrency)
    return {key: _stitch(chunks) for key, chunks in parts.items()}


def _query_points(client: Client, query: str, start_ms: int, step_ms: int, first: int, last: int) -> list[Series]:
    """Points first..last of the grid; halves the chunk when the server finds it too big."""
    try:
        return client.range_query(range_params(query, start_ms + first * step_ms, start_ms + last * step_ms, step_ms))
    except QueryRejected as exc:
        if first == last or not any(s in str(exc) for s in _SPLITTABLE):
            raise
    middle = (first + last) // 2
    log.debug("splitting %s at point %d", query, middle)
    return [*_query_points(client, query, start_ms, step_ms, first, middle),
            *_query_points(client, query, start_ms, step_ms, middle + 1, last)]


def _run_bounded(tasks: list[tuple[Any, ...]], fn: Callable[..., None], concurrency: int) -> None:
    """Run fn(*task) for every task, `concurrency` at a time; the first failure cancels the rest."""
    if concurrency == 1 or len(tasks) == 1:
        for task in tasks:
            fn(*task)
        return
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="prom") as pool:
        futures: list[Future[None]] = [pool.submit(fn, *task) for task in tasks]
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception()), None)
        if failed is not None:
            for future in futures:
                future.cancel()
            raise failed.exception()  # type: ignore[misc]  # not None: checked just above


def _stitch(chunks: list[list[Series]]) -> list[Series]:
    """Join each label set's pieces in chunk order (chunks never overlap), sorted by labels."""
    pieces: dict[tuple[tuple[str, str], ...], list[Series]] = {}
    for chunk in chunks:
        for series in chunk:
            pieces.setdefault(tuple(sorted(series.labels.items())), []).append(series)
    out = []
    for key in sorted(pieces):
        parts = pieces[key]
        if len(parts) == 1:
            out.append(parts[0])
        else:
            out.append(Series(parts[0].labels, np.concatenate([p.timestamps for p in parts]),
                              np.concatenate([p.values for p in parts])))
    return out


# -- the `query` command's work -----------------------------------------------------------------------

def output_path(output: str, data_path: Path) -> Path:
    """`<data-path>/<output>.json` for a bare name (upstream's convention); a path or *.json as given."""
    if output.endswith(".json") or os.sep in output or (os.altsep and os.altsep in output):
        return Path(output)
    return Path(data_path) / f"{output}.json"


def write_query(settings: PromSettings, path: Path) -> dict[str, Any]:
    """Fetch the window and write the query JSON atomically to `path`; a summary of what was written."""
    result = fetch(settings)
    written = promjson.dump(result, path)
    window = result.time_range()
    return {
        "metrics": len(result.metrics),
        "series": sum(len(s) for s in result.metrics.values()),
        "samples": result.sample_count,
        "window": {"start": iso(settings.start), "end": iso(settings.end), "step": settings.step,
                   "first_sample": iso(window[0]) if window else None,
                   "last_sample": iso(window[1]) if window else None},
        "path": str(written),
    }
