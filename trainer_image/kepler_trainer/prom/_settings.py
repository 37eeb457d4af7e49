"""What a Prometheus read needs to know, as typed, frozen, validated settings (no argparse here).

Three concerns, three models, each read by one layer:
* `PrometheusSettings`: where the server is and how to talk to it (TLS, token, timeouts, retries,
  concurrency): the HTTP client (`_http`) reads only these.
* `QueryWindow`: the evaluation grid (start, end, step) and the largest chunk Prometheus accepts:
  the query builder (`_promql`) reads only these.
* `MetricSelection`: which metrics and series (prefix, third-party names, label matchers).

`PromSettings` is all three at once, by inheritance rather than composition: one flat spelling
(`settings.start`, `settings.server`) for the command line, the operator's argv property test and
`train_arguments.json`, while every layer's signature names the one concern it reads. The cost is
that the three models must never share a field name (a test checks it).

Validation errors are pydantic's (a ValueError); the command line turns them into its one-line
message and exit code (`cli.settings_from_args`). Times and durations given as text are parsed here
too and refused with a ValueError whose text is the message the user sees.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..errors import InputError

MAX_POINTS_PER_SERIES = 11_000  # Prometheus: "exceeded maximum resolution of 11,000 points per timeseries"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
DEFAULT_SERVER = "http://localhost:9090"
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"


class LabelMatcher(BaseModel):
    """One PromQL label matcher, `name op "value"`, applied in every selector."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=f"^{LABEL_NAME}$")
    op: Literal["=", "!=", "=~", "!~"] = "="
    value: str

    @classmethod
    def parse(cls, text: str) -> LabelMatcher:
        match = re.fullmatch(rf"\s*({LABEL_NAME})\s*(=~|!~|!=|=)(.*)", text, re.DOTALL)
        if not match:
            raise ValueError(f"bad label filter {text!r}: expected NAME=VALUE (or !=, =~, !~)")
        name, op, value = match.groups()
        return cls(name=name, op=op, value=value)

    @classmethod
    def equals(cls, text: str) -> LabelMatcher:
        """`K=V` as an equality whatever V holds (what the operator passes: `~.*` stays a literal)."""
        name, sep, value = text.partition("=")
        try:
            if sep:
                return cls(name=name, value=value)
        except ValueError:
            pass
        raise ValueError(f"bad label filter {text!r}: expected NAME=VALUE with NAME a label name")

    def promql(self) -> str:
        return f"{self.name}{self.op}{promql_string(self.value)}"

    def __str__(self) -> str:
        return f"{self.name}{self.op}{self.value}"


def promql_string(value: str) -> str:
    """A PromQL string literal holding `value` verbatim."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class PrometheusSettings(BaseModel):
    """The server and how to talk to it."""

    model_config = ConfigDict(frozen=True)

    server: str = DEFAULT_SERVER
    bearer_token_file: Path | None = None
    ca_file: Path | None = None
    insecure_skip_tls_verify: bool = False
    timeout: float = Field(120.0, gt=0)   # per request, seconds
    retries: int = Field(3, ge=0)
    concurrency: int = Field(4, ge=1, le=64)

    @field_validator("server")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError(f"Prometheus server must be an http(s) URL, got {value!r}")
        return value.rstrip("/")

    @property
    def url(self) -> str:
        return self.server


class QueryWindow(BaseModel):
    """The evaluation grid start + k * step up to end, and the most points one request may ask for."""

    model_config = ConfigDict(frozen=True)

    start: float                          # unix seconds
    end: float
    step: float = Field(3.0, gt=0)        # seconds between evaluation points
    max_points: int = Field(MAX_POINTS_PER_SERIES, ge=1, le=MAX_POINTS_PER_SERIES)

    @model_validator(mode="after")
    def _window(self) -> QueryWindow:
        if not self.end > self.start:
            raise ValueError(f"bad window: end {iso(self.end)} is not after start {iso(self.start)}")
        return self

    def grid(self) -> tuple[int, int, int]:
        """(start ms, number of points, step ms): integer milliseconds, as Prometheus itself counts."""
        start_ms, end_ms, step_ms = (int(round(v * 1000)) for v in (self.start, self.end, self.step))
        step_ms = max(step_ms, 1)
        return start_ms, (end_ms - start_ms) // step_ms + 1, step_ms

    @property
    def points(self) -> int:
        """Evaluation points per series over the whole window (the grid includes both ends)."""
        return self.grid()[1]

    def describe_window(self) -> str:
        return f"{iso(self.start)} .. {iso(self.end)} step {self.step:g}s"


class MetricSelection(BaseModel):
    """Which metrics (by prefix, plus named third-party ones) and which of their series."""

    model_config = ConfigDict(frozen=True)

    metric_prefix: str = "kepler_"
    label_filters: tuple[LabelMatcher, ...] = ()
    thirdparty_metrics: tuple[str, ...] = ()


class PromSettings(PrometheusSettings, QueryWindow, MetricSelection):
    """Everything one read from Prometheus needs: the server, the window and the metrics."""


# -- text -> values ---------------------------------------------------------------------------------

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
        raise ValueError(
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
            raise ValueError(f"invalid duration {text!r}: expected seconds or e.g. 5m, 1h") from None
        value = sum(float(n) * _DURATION_UNITS[u] for n, u in parts)
    if not value > 0 or math.isinf(value):
        raise ValueError(f"invalid duration {text!r}: must be positive")
    return value


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
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise InputError(f"{path}: not a benchmark window (need startTimeUTC and endTimeUTC): {exc}") from None


def _benchmark_time(value: object) -> float:
    if not isinstance(value, (str, int, float)):
        raise TypeError(f"bad time {value!r}")
    return parse_time(str(value))


def iso(seconds: float) -> str:
    """UTC text of unix seconds, with milliseconds only when there are some."""
    moment = datetime.fromtimestamp(seconds, UTC)
    text = moment.strftime(TIME_FORMAT)
    return text if moment.microsecond == 0 else text[:-1] + f".{moment.microsecond // 1000:03d}Z"
