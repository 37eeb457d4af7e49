"""Kepler's metrics over a time window, straight from Prometheus (`kepler-model query`, `-s` of train/estimate).

The flow: discover the metric names that carry the prefix, then range-query every metric over the
window, split into chunks of at most 11,000 points per series (Prometheus refuses more), run the
chunk requests concurrently with a bound, and stitch the chunks back into one `Series` per label
set. Chunks are consecutive slices of one evaluation grid (start + k * step), so stitching never
creates a gap or a duplicate.

Where prometheus-api-client is and is not used:
* HTTP session, retries, TLS: a plain `requests.Session` with urllib3's `Retry`, configured exactly
  the way `PrometheusConnect` configures its own, and handed to it, so both share one connection
  pool, one bearer token and one CA bundle.
* Metric discovery: `PrometheusConnect.get_label_values("__name__")`, with `match[]` selectors so
  that label filters and the window narrow the answer on the server.
* Range queries: not `custom_query_range`: it decodes the whole answer into Python lists (three
  objects per sample: several seconds and about 1 GB for a day of 200 series at 3 s). We request
  the same endpoint through the same session and turn each `values` array into numpy in one call.
  Its `get_metric_range_data` chunking is sequential and by duration, not by points.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import orjson
import requests
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from . import promjson
from .data import QueryResult, Series
from .errors import (
    InputError,
    NoKeplerMetricsError,
    PrometheusQueryError,
    PrometheusUnreachableError,
    TooFewSamplesError,
)

log = logging.getLogger(__name__)

MAX_POINTS_PER_SERIES = 11_000  # Prometheus: "exceeded maximum resolution of 11,000 points per timeseries"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
DEFAULT_SERVER = "http://localhost:9090"
_RETRY_STATUS = (429, 500, 502, 503, 504)
_SPLITTABLE = ("too many samples", "maximum resolution")  # answers a smaller chunk can avoid


# -- settings -------------------------------------------------------------------------------------

class LabelMatcher(BaseModel):
    """One PromQL label matcher, `name op "value"`, applied in every selector."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$")
    op: Literal["=", "!=", "=~", "!~"] = "="
    value: str

    @classmethod
    def parse(cls, text: str) -> LabelMatcher:
        match = re.fullmatch(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)(.*)", text, re.DOTALL)
        if not match:
            raise ValueError(f"bad label filter {text!r}: expected NAME=VALUE (or !=, =~, !~)")
        name, op, value = match.groups()
        return cls(name=name, op=op, value=value)

    def promql(self) -> str:
        return f"{self.name}{self.op}{_promql_string(self.value)}"

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


class PromSettings(BaseModel):
    """Where to query, which window, and how to talk to the server."""

    model_config = ConfigDict(frozen=True)

    server: str = DEFAULT_SERVER
    start: float                          # unix seconds
    end: float
    step: float = Field(3.0, gt=0)        # seconds between evaluation points
    metric_prefix: str = "kepler_"
    label_filters: tuple[LabelMatcher, ...] = ()
    thirdparty_metrics: tuple[str, ...] = ()
    bearer_token_file: Path | None = None
    ca_file: Path | None = None
    insecure_skip_tls_verify: bool = False
    timeout: float = Field(120.0, gt=0)   # per request, seconds
    retries: int = Field(3, ge=0)
    concurrency: int = Field(4, ge=1, le=64)
    max_points: int = Field(MAX_POINTS_PER_SERIES, ge=1, le=MAX_POINTS_PER_SERIES)

    @field_validator("server")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"Prometheus server must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _window(self) -> PromSettings:
        if not self.end > self.start:
            raise ValueError(f"bad window: end {_iso(self.end)} is not after start {_iso(self.start)}")
        return self

    @property
    def url(self) -> str:
        return self.server

    @property
    def points(self) -> int:
        """Evaluation points per series over the whole window (the grid includes both ends)."""
        return _grid(self)[1]

    def describe_window(self) -> str:
        return f"{_iso(self.start)} .. {_iso(self.end)} step {self.step:g}s"


# -- command-line arguments -----------------------------------------------------------------------

def parse_time(text: str) -> float:
    """Unix seconds, or a UTC date-time (`%Y-%m-%dT%H:%M:%SZ`; ISO 8601 with an offset also works)."""
    try:
        return float(text)
    except ValueError:
        pass
    for fmt in (TIME_FORMAT, "%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%d %H:%M:%S"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid time {text!r}: expected unix seconds or {TIME_FORMAT.replace('%', '')}") from None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_seconds(text: str | float) -> float:
    """Seconds as a number, or a Prometheus-style duration (`30s`, `5m`, `1h30m`)."""
    try:
        value = float(text)
    except ValueError:
        parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w)", str(text))
        if not parts or "".join(n + u for n, u in parts) != str(text).strip():
            raise argparse.ArgumentTypeError(f"invalid duration {text!r}: expected seconds or e.g. 5m, 1h") from None
        value = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if not value > 0 or math.isinf(value):
        raise argparse.ArgumentTypeError(f"invalid duration {text!r}: must be positive")
    return value


def _label_filter(text: str) -> str:
    """Checked at parse time, kept as text: parsed arguments stay JSON (train_arguments.json records them)."""
    try:
        return str(LabelMatcher.parse(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).splitlines()[0]) from None


def _label_equals(text: str) -> str:
    """`K=V` as an equality matcher whatever V holds; checked at parse time, kept as text."""
    name, sep, value = text.partition("=")
    try:
        LabelMatcher(name=name, value=value)
    except ValueError:
        sep = ""
    if not sep:
        raise argparse.ArgumentTypeError(f"bad label filter {text!r}: expected NAME=VALUE with NAME a label name")
    return text


def _label_matchers(args: argparse.Namespace) -> tuple[LabelMatcher, ...]:
    matchers = [LabelMatcher.parse(f) if isinstance(f, str) else f for f in args.label_filter or ()]
    for text in getattr(args, "label_equals", None) or ():
        name, _, value = text.partition("=")
        matchers.append(LabelMatcher(name=name, value=value))
    return tuple(matchers)


def _env_list(name: str) -> list[str]:
    return [item for item in re.split(r"[,\s]+", os.environ.get(name, "")) if item]


def add_prometheus_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every command that reads from Prometheus (query, and train/estimate with -s)."""
    group = parser.add_argument_group("Prometheus")
    group.add_argument("-s", "--server", default=os.environ.get("PROM_SERVER", DEFAULT_SERVER),
                       help="Prometheus URL (default: $PROM_SERVER or %(default)s)")
    group.add_argument("--interval", type=parse_seconds, default=os.environ.get("PROM_QUERY_INTERVAL", "300"),
                       help="window length ending now, seconds or e.g. 1h (default: $PROM_QUERY_INTERVAL or 300)")
    group.add_argument("--start-time", type=parse_time, default=None,
                       help="window start, UTC %%Y-%%m-%%dT%%H:%%M:%%SZ or unix seconds")
    group.add_argument("--end-time", type=parse_time, default=None,
                       help="window end (default: now, or start + interval)")
    group.add_argument("--step", type=parse_seconds, default=os.environ.get("PROM_QUERY_STEP", "3"),
                       help="evaluation step in seconds (default: $PROM_QUERY_STEP or 3)")
    group.add_argument("--metric-prefix", default="kepler_", help="metric name prefix (default: %(default)s)")
    group.add_argument("--label-filter", type=_label_filter, action="append", default=[], metavar="K=V",
                       help="only series with this label (repeatable; also K!=V, K=~RE, K!~RE), e.g. "
                            "instance=node-1:9102 when several Kepler exporters share one Prometheus")
    group.add_argument("--label-equals", type=_label_equals, action="append", default=[], metavar="K=V",
                       help="only series whose label K equals V, V taken verbatim (repeatable): what the "
                            "operator passes, so a value such as '~.*' stays a literal")
    group.add_argument("-tm", "--thirdparty-metrics", nargs="+", action="extend", metavar="METRIC", default=None,
                       help="extra metric names to fetch (default: $PROM_THIRDPARTY_METRICS)")
    group.add_argument("--benchmark", metavar="FILE", default=None,
                       help="JSON file whose startTimeUTC/endTimeUTC give the window (or a CPE Benchmark)")
    group.add_argument("--bearer-token-file",
                       default=os.environ.get("PROM_BEARER_TOKEN_FILE") or None,
                       help="file holding a bearer token, e.g. a mounted service-account token")
    group.add_argument("--ca-file", default=os.environ.get("PROM_CA_FILE") or None,
                       help="CA bundle that signs the server's certificate")
    group.add_argument("--insecure-skip-tls-verify", action="store_true",
                       default=os.environ.get("PROM_SSL_DISABLE", "").lower() == "true",
                       help="do not verify the server's certificate")
    group.add_argument("--timeout", type=parse_seconds, default=120.0, help="per request, seconds (default: 120)")
    group.add_argument("--retries", type=int, default=3,
                       help="retries with backoff on connection errors and 5xx (default: 3)")
    group.add_argument("--concurrency", type=int, default=4, help="requests in flight (default: 4)")


def settings_from_args(args: argparse.Namespace) -> PromSettings:
    """Resolve the window (start/end > --benchmark file > last --interval) and validate everything."""
    start, end = _window_from_args(args)
    try:
        return PromSettings(
            server=args.server, start=start, end=end, step=args.step, metric_prefix=args.metric_prefix,
            label_filters=_label_matchers(args),
            thirdparty_metrics=_thirdparty(args.thirdparty_metrics),
            bearer_token_file=args.bearer_token_file, ca_file=args.ca_file,
            insecure_skip_tls_verify=args.insecure_skip_tls_verify, timeout=args.timeout,
            retries=args.retries, concurrency=args.concurrency)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise _settings_error(exc) from None


def _thirdparty(given: list[str] | None) -> tuple[str, ...]:
    # default None, not the environment's list: argparse's "extend" appends to a default in place
    items = _env_list("PROM_THIRDPARTY_METRICS") if given is None else given
    return tuple(dict.fromkeys(m for item in items for m in item.split(",") if m))


def _settings_error(exc: ValueError) -> Exception:
    errors = getattr(exc, "errors", lambda: [])()
    message = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'window'}: {e['msg'].removeprefix('Value error, ')}"
                        for e in errors) or str(exc)
    if any(not e["loc"] for e in errors):  # the window check: Prometheus would answer 400 for it
        return PrometheusQueryError(message)
    return InputError(f"invalid Prometheus settings: {message}")


def _window_from_args(args: argparse.Namespace) -> tuple[float, float]:
    now = datetime.now(UTC).timestamp()
    interval = parse_seconds(args.interval)
    if args.start_time is not None or args.end_time is not None:
        end = args.end_time if args.end_time is not None else (
            min(now, args.start_time + interval) if args.start_time is not None else now)
        start = args.start_time if args.start_time is not None else end - interval
    elif args.benchmark:
        start, end = read_window(_resolve_benchmark(args.benchmark, getattr(args, "data_path", None)))
    else:
        start, end = now - interval, now
    return round(start, 3), round(end, 3)


def _resolve_benchmark(name: str, data_path: str | Path | None) -> Path:
    given = Path(name)
    candidates = [given]
    if data_path is not None:
        candidates += [Path(data_path) / given, Path(data_path) / f"{given}.json"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise InputError(f"benchmark file {name!r} not found (looked for {', '.join(map(str, candidates))})")


def read_window(path: Path) -> tuple[float, float]:
    """The window of a benchmark file: `{"startTimeUTC", "endTimeUTC"}` or a CPE `Benchmark` resource."""
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        raise InputError(f"cannot read benchmark file {path}: {exc}") from None
    try:
        if isinstance(doc, dict) and "startTimeUTC" in doc:
            return _benchmark_time(doc["startTimeUTC"]), _benchmark_time(doc["endTimeUTC"])
        start = doc["metadata"]["creationTimestamp"]
        end = doc["status"]["results"][-1]["repetitions"][-1]["pushedTime"].split(".")[0]
        return _benchmark_time(start), _benchmark_time(end)
    except (KeyError, IndexError, TypeError, argparse.ArgumentTypeError) as exc:
        raise InputError(f"{path}: not a benchmark window (need startTimeUTC and endTimeUTC): {exc}") from None


def _benchmark_time(value: object) -> float:
    if not isinstance(value, (str, int, float)):
        raise TypeError(f"bad time {value!r}")
    return parse_time(str(value))


# -- PromQL ---------------------------------------------------------------------------------------

def _promql_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def selector(metric: str, filters: Iterable[LabelMatcher] = ()) -> str:
    """`metric{filters}`: the filters go into the selector so Prometheus never sends other series."""
    inner = ",".join(f.promql() for f in filters)
    return f"{metric}{{{inner}}}" if inner else metric


def _discovery_matchers(settings: PromSettings) -> list[str]:
    filters = [f.promql() for f in settings.label_filters]
    prefix = re.escape(settings.metric_prefix).replace("\\", "\\\\")  # RE2 inside a PromQL string
    matchers = [",".join([f'__name__=~"{prefix}.*"', *filters])]
    matchers += [",".join([f"__name__={_promql_string(m)}", *filters]) for m in settings.thirdparty_metrics]
    return [f"{{{m}}}" for m in matchers]


# -- the evaluation grid and its chunks -----------------------------------------------------------

def _grid(settings: PromSettings) -> tuple[int, int, int]:
    """(start ms, number of points, step ms): integer milliseconds, as Prometheus itself counts."""
    start_ms, end_ms, step_ms = (int(round(v * 1000)) for v in (settings.start, settings.end, settings.step))
    step_ms = max(step_ms, 1)
    return start_ms, (end_ms - start_ms) // step_ms + 1, step_ms


def chunk_windows(settings: PromSettings) -> list[tuple[int, int]]:
    """[first, last] point indexes of each chunk: consecutive, disjoint, at most max_points each."""
    _, points, _ = _grid(settings)
    return [(first, min(first + settings.max_points, points) - 1) for first in range(0, points, settings.max_points)]


# -- HTTP -----------------------------------------------------------------------------------------

class _Client:
    """One requests session (retries, TLS, token) shared by discovery and the range queries."""

    def __init__(self, settings: PromSettings):
        self.settings = settings
        self.session = requests.Session()
        self.session.verify = (str(settings.ca_file) if settings.ca_file else not settings.insecure_skip_tls_verify)
        if settings.ca_file and not settings.ca_file.is_file():
            raise InputError(f"CA file {settings.ca_file} not found")
        if settings.insecure_skip_tls_verify and not settings.ca_file:
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # asked for explicitly
        if settings.bearer_token_file:
            self.session.headers["Authorization"] = f"Bearer {_read_token(settings.bearer_token_file)}"
        # Prometheus gzips when asked: worth it over a network, pure CPU on the loopback.
        self.session.headers["Accept-Encoding"] = "gzip" if _remote(settings.server) else "identity"
        self.retry = Retry(total=settings.retries, connect=settings.retries, read=settings.retries,
                           status=settings.retries, backoff_factor=0.5, backoff_max=10,
                           status_forcelist=_RETRY_STATUS, allowed_methods=frozenset({"GET", "POST"}),
                           raise_on_status=False, respect_retry_after_header=True)
        pool = max(10, settings.concurrency)
        self.session.mount("http://", HTTPAdapter(max_retries=self.retry, pool_maxsize=pool))
        self.session.mount("https://", HTTPAdapter(max_retries=self.retry, pool_maxsize=pool))
        self.timeout = (min(10.0, settings.timeout), settings.timeout)

    def __enter__(self) -> _Client:
        return self

    def __exit__(self, *exc) -> None:
        self.session.close()

    def metric_names(self) -> list[str]:
        from prometheus_api_client import PrometheusConnect
        from prometheus_api_client.exceptions import PrometheusApiClientException

        settings = self.settings
        connect = PrometheusConnect(url=settings.server, session=self.session, retry=self.retry,
                                    timeout=self.timeout)
        self.session.mount(settings.server, HTTPAdapter(max_retries=self.retry,
                                                        pool_maxsize=max(10, settings.concurrency)))
        params = {"match[]": _discovery_matchers(settings), "start": f"{settings.start:.3f}",
                  "end": f"{settings.end:.3f}"}
        try:
            names = connect.get_label_values("__name__", params=params)
        except PrometheusApiClientException as exc:
            raise self._status_error(str(exc), "listing metric names") from None
        except requests.JSONDecodeError:  # 200 but not JSON: a login page, an exporter, another app
            raise PrometheusQueryError(f"{settings.server} did not answer like Prometheus (not JSON)") from None
        except requests.RequestException as exc:
            raise self._unreachable(exc) from None
        except (ValueError, KeyError, TypeError) as exc:  # 200 but not the Prometheus API
            raise PrometheusQueryError(f"{settings.server} did not answer like Prometheus: {exc}") from None
        prefix, extra = settings.metric_prefix, set(settings.thirdparty_metrics)
        return sorted(n for n in names if n.startswith(prefix) or n in extra)

    def range_query(self, query: str, start_ms: int, end_ms: int, step_ms: int) -> list[Series]:
        params = {"query": query, "start": f"{start_ms / 1000:.3f}", "end": f"{end_ms / 1000:.3f}",
                  "step": f"{step_ms / 1000:.3f}"}
        try:
            # verify= on every call: requests lets $REQUESTS_CA_BUNDLE override session.verify.
            response = self.session.get(f"{self.settings.server}/api/v1/query_range", params=params,
                                        timeout=self.timeout, verify=self.session.verify)
        except requests.RequestException as exc:
            raise self._unreachable(exc) from None
        if response.status_code != 200:
            raise self._status_error(_error_text(response), f"query {query}", response.status_code)
        return parse_matrix(response.content, query)

    def _status_error(self, text: str, what: str, status: int | None = None) -> Exception:
        if status is None:
            found = re.search(r"HTTP Status Code (\d+)", text)
            status = int(found.group(1)) if found else 0
            text = _error_text_from_bytes(text)
        if status >= 500 or status in _RETRY_STATUS:
            return PrometheusUnreachableError(
                f"Prometheus at {self.settings.server} kept failing ({what}, up to {self.settings.retries} "
                f"retries): HTTP {status}: {text}")
        return _QueryRejected(status, f"Prometheus rejected {what}: HTTP {status}: {text}")

    def _unreachable(self, exc: Exception) -> PrometheusUnreachableError:
        return PrometheusUnreachableError(f"Prometheus at {self.settings.server} is unreachable: {_short_reason(exc)}")


class _QueryRejected(PrometheusQueryError):
    """A 4xx answer; `status` tells a window too big for one request from a bad query."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _remote(url: str) -> bool:
    host = re.sub(r"^https?://(?:[^@/]*@)?", "", url).split("/")[0].rsplit(":", 1)[0].strip("[]")
    return host not in {"localhost", "127.0.0.1", "::1"}


def _read_token(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise InputError(f"cannot read bearer token file {path}: {exc.strerror}") from None
    if not token or "\n" in token:
        raise InputError(f"bearer token file {path} must hold one non-empty line")
    return token


def _error_text(response: requests.Response) -> str:
    try:
        body = orjson.loads(response.content)
        return str(body.get("error") or body)[:300]
    except (orjson.JSONDecodeError, AttributeError):
        return (response.text.strip().splitlines() or [response.reason or ""])[0][:300]


def _error_text_from_bytes(text: str) -> str:
    """The `error` field out of prometheus-api-client's "HTTP Status Code N (b'...')" message."""
    found = re.search(r'"error"\s*:\s*"((?:[^"\\]|\\.)*)"', text)
    return (found.group(1) if found else text)[:300]


def _short_reason(exc: Exception) -> str:
    text = str(exc)
    for pattern in (r"\[Errno -?\d+\] [^'\")]+", r"Read timed out[^'\")]*", r"timed out",
                    r"certificate verify failed[^'\")]*", r"Name or service not known",
                    r"too many \d+ error responses"):
        found = re.search(pattern, text)
        if found:
            return found.group(0).strip().rstrip(".")
    return f"{type(exc).__name__}: {text[:200]}"


# -- parsing the range-query answer ---------------------------------------------------------------

_MATRIX_START = re.compile(
    rb'\s*\{\s*"status"\s*:\s*"success"\s*,\s*"data"\s*:\s*\{\s*"resultType"\s*:\s*"matrix"\s*,\s*"result"\s*:\s*\[')
_SERIES_HEAD = re.compile(
    rb'\s*\{\s*"metric"\s*:\s*(\{(?:\s*"(?:[^"\\]|\\.)*"\s*:\s*"(?:[^"\\]|\\.)*"\s*,?)*\s*\})\s*,\s*"values"\s*:\s*\[')
_VALUES_END = re.compile(rb"\]\s*\]")
_SERIES_TAIL = re.compile(rb"\s*\}\s*(,|\])")


def parse_matrix(body: bytes, query: str = "") -> list[Series]:
    """A query_range answer as Series; `values` go to numpy in one call each (timestamps, values).

    A fast path walks Prometheus' own layout (metric, then values); any other layout (extra
    fields, another field order) falls back to a full JSON decode.
    """
    head = _MATRIX_START.match(body)
    if head:
        try:
            return _parse_matrix_fast(body, head.end())
        except _Layout:
            pass
    return _parse_matrix_json(body, query)


class _Layout(Exception):
    """The answer is not laid out as the fast path expects."""


def _parse_matrix_fast(body: bytes, pos: int) -> list[Series]:
    out: list[Series] = []
    if re.match(rb"\s*\]", body[pos:pos + 64]):
        return out
    while True:
        head = _SERIES_HEAD.match(body, pos)
        if not head:
            raise _Layout
        labels = orjson.loads(head.group(1))
        if re.match(rb"\s*\]", body[head.end():head.end() + 64]):  # "values": []
            end = body.index(b"]", head.end()) + 1
            ts = values = np.empty(0)
        else:
            close = _VALUES_END.search(body, head.end())
            if not close:
                raise _Layout
            raw = body[head.end():close.start() + 1]
            end = close.end()
            flat = _numbers(raw.translate(None, b'[]"'))
            if flat.size != 2 * raw.count(b"["):
                raise _Layout
            ts, values = flat[0::2], flat[1::2]
        out.append(Series(labels, ts, values))
        tail = _SERIES_TAIL.match(body, end)
        if not tail:
            raise _Layout
        if tail.group(1) == b"]":
            return out
        pos = tail.end()


def _numbers(text: bytes) -> np.ndarray:
    """Comma-separated numbers as float64: orjson is the fastest exact parser at hand; numpy's text
    parser takes the NaN and ±Inf that JSON cannot spell."""
    try:
        return np.array(orjson.loads(b"[" + text + b"]"), dtype=np.float64)
    except orjson.JSONDecodeError:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            return np.fromstring(text, sep=",")  # noqa: NPY201 (text mode)


def _parse_matrix_json(body: bytes, query: str) -> list[Series]:
    try:
        doc = orjson.loads(body)
        if doc.get("status") != "success":
            raise PrometheusQueryError(f"Prometheus failed {query}: {doc.get('error', doc)}")
        data = doc["data"]
        if data.get("resultType") != "matrix":
            raise PrometheusQueryError(f"Prometheus answered {query} with a {data.get('resultType')}, not a matrix")
        out = []
        for item in data["result"]:
            pairs = item.get("values") or []
            ts = np.array([p[0] for p in pairs], dtype=np.float64)
            values = np.array([p[1] for p in pairs], dtype=np.float64)
            out.append(Series(dict(item.get("metric", {})), ts, values))
        return out
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:
        if isinstance(exc, PrometheusQueryError):
            raise
        raise PrometheusQueryError(f"unexpected answer to {query}: {type(exc).__name__}: {exc}") from None


# -- fetching -------------------------------------------------------------------------------------

MetricFilter = Callable[[str], bool] | Collection[str] | None


def fetch(settings: PromSettings, *, metric_filter: MetricFilter = None) -> QueryResult:
    """Every metric with the prefix (and the third-party ones) over the window, one Series per label set."""
    with _Client(settings) as client:
        names = _wanted(client.metric_names(), metric_filter)
        if not names:
            raise NoKeplerMetricsError(
                f"no metric named {settings.metric_prefix}* in {settings.server} over {settings.describe_window()}"
                + (f" with {', '.join(map(str, settings.label_filters))}" if settings.label_filters else ""))
        chunks = _fetch_chunks(client, names)
    result = QueryResult({name: _stitch(parts) for name, parts in chunks.items()})
    result.metrics = {name: series for name, series in result.metrics.items() if series}
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
    with _Client(settings) as client:
        start_ms, _, step_ms = _grid(settings)
        windows = chunk_windows(settings)
        parts: dict[str, list[list[Series]]] = {q: [[] for _ in windows] for q in queries}

        def one(query: str, index: int) -> None:
            first, last = windows[index]
            parts[query][index] = _query_points(client, query, start_ms, step_ms, first, last)

        _run_bounded([(q, i) for q in queries for i in range(len(windows))], one, settings.concurrency)
    return {query: _stitch(chunks) for query, chunks in parts.items()}


def _wanted(names: list[str], metric_filter: MetricFilter) -> list[str]:
    if metric_filter is None:
        return names
    keep = metric_filter if callable(metric_filter) else set(metric_filter).__contains__
    return [n for n in names if keep(n)]


def _fetch_chunks(client: _Client, names: list[str]) -> dict[str, list[list[Series]]]:
    """metric -> its answer per chunk, in chunk order; requests run `concurrency` at a time."""
    settings = client.settings
    start_ms, _, step_ms = _grid(settings)
    windows = chunk_windows(settings)
    results: dict[str, list[list[Series]]] = {name: [[] for _ in windows] for name in names}

    def one(name: str, index: int) -> None:
        first, last = windows[index]
        results[name][index] = _query_points(client, selector(name, settings.label_filters),
                                             start_ms, step_ms, first, last)

    _run_bounded([(name, i) for name in names for i in range(len(windows))], one, settings.concurrency)
    return results


def _query_points(client: _Client, query: str, start_ms: int, step_ms: int, first: int, last: int) -> list[Series]:
    """Points first..last of the grid; halves the chunk when the server finds it too big."""
    try:
        return client.range_query(query, start_ms + first * step_ms, start_ms + last * step_ms, step_ms)
    except _QueryRejected as exc:
        if first == last or not any(s in str(exc) for s in _SPLITTABLE):
            raise
    middle = (first + last) // 2
    log.debug("splitting %s at point %d", query, middle)
    return [*_query_points(client, query, start_ms, step_ms, first, middle),
            *_query_points(client, query, start_ms, step_ms, middle + 1, last)]


def _run_bounded(tasks: list[tuple], fn: Callable[..., None], concurrency: int) -> None:
    """Run fn(*task) for every task, `concurrency` at a time; the first failure cancels the rest."""
    if concurrency == 1 or len(tasks) == 1:
        for task in tasks:
            fn(*task)
        return
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="prom") as pool:
        futures: list[Future] = [pool.submit(fn, *task) for task in tasks]
        wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f.done() and not f.cancelled() and f.exception()), None)
        if failed is not None:
            for future in futures:
                future.cancel()
            raise failed.exception()


def _stitch(chunks: list[list[Series]]) -> list[Series]:
    """Join each label set's pieces in chunk order (chunks never overlap), sorted by labels."""
    pieces: dict[tuple, list[Series]] = {}
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


# -- the `query` command --------------------------------------------------------------------------

def output_path(output: str, data_path: Path) -> Path:
    """`<data-path>/<output>.json` for a bare name (upstream's convention); a path or *.json as given."""
    if output.endswith(".json") or os.sep in output or (os.altsep and os.altsep in output):
        return Path(output)
    return Path(data_path) / f"{output}.json"


def run_query(args: argparse.Namespace, data_path: Path) -> dict:
    """`kepler-model query`: fetch the window and write the query JSON atomically; a summary back."""
    settings = settings_from_args(args)
    result = fetch(settings)
    path = promjson.dump(result, output_path(getattr(args, "output", None) or "output", Path(data_path)))
    window = result.time_range()
    return {
        "metrics": len(result.metrics),
        "series": sum(len(s) for s in result.metrics.values()),
        "samples": result.sample_count,
        "window": {"start": _iso(settings.start), "end": _iso(settings.end), "step": settings.step,
                   "first_sample": _iso(window[0]) if window else None,
                   "last_sample": _iso(window[1]) if window else None},
        "path": str(path),
    }


def _iso(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    text = moment.strftime(TIME_FORMAT)
    return text if moment.microsecond == 0 else text[:-1] + f".{moment.microsecond // 1000:03d}Z"

