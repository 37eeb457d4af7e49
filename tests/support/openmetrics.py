"""Kepler-shaped OpenMetrics with a known ground truth, for backfilling a real Prometheus.

Every exporter (one Kepler instance) has containers whose eight workload counters grow by random
integer increments each step, and node energy counters (RAPL package/core/uncore/dram with
`source`/`mode`/`package` labels, ACPI platform) whose power over each step is an exact linear
function of the containers' counter rates (`LinearPower`). A linear regression on the rates
therefore recovers the ground truth. Exporter restarts (counter resets) and scrape gaps are
placed at chosen sample indexes.

`KeplerData.series()` is exactly what gets backfilled; `expected_range` is what a Prometheus 2.x
range query must answer for it (instant-vector selection with the 5-minute lookback).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import numpy as np

FEATURES = ("bpf_cpu_time_ms", "cpu_cycles", "cpu_instructions", "cache_miss", "bpf_page_cache_hit",
            "bpf_block_irq", "bpf_net_rx_irq", "bpf_net_tx_irq")
RAPL_COMPONENTS = ("package", "core", "uncore", "dram")
MODES = ("idle", "dynamic")
LOOKBACK_S = 300  # Prometheus' default --query.lookback-delta

# Per-container rate ranges (per second), roughly what a busy server shows.
RATE_RANGES: Mapping[str, tuple[float, float]] = {
    "bpf_cpu_time_ms": (0, 1000), "cpu_cycles": (1e8, 3e9), "cpu_instructions": (5e7, 2e9),
    "cache_miss": (1e5, 5e7), "bpf_page_cache_hit": (0, 5e4), "bpf_block_irq": (0, 500),
    "bpf_net_rx_irq": (0, 2000), "bpf_net_tx_irq": (0, 2000),
}

# Fixed in the past so that data, windows and caches are the same on every run.
EPOCH = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp())


@dataclass(frozen=True)
class LinearPower:
    """Ground truth for one component: watts = idle + sum(coef[f] * node-wide rate of feature f)."""

    idle: float
    coef: Mapping[str, float] = field(default_factory=dict)

    def watts(self, rates: Mapping[str, np.ndarray]) -> np.ndarray:
        total = np.full(len(next(iter(rates.values()))), float(self.idle))
        for feature, weight in self.coef.items():
            total += weight * rates[feature]
        return total


GROUND_TRUTH: Mapping[str, LinearPower] = {
    "package": LinearPower(40.0, {"bpf_cpu_time_ms": 0.01, "cpu_instructions": 5e-9}),
    "core": LinearPower(20.0, {"bpf_cpu_time_ms": 0.006, "cpu_instructions": 3e-9}),
    "uncore": LinearPower(2.0),
    "dram": LinearPower(5.0, {"cache_miss": 2e-7}),
    "platform": LinearPower(80.0, {"bpf_cpu_time_ms": 0.015, "cpu_instructions": 6e-9}),
}


@dataclass(frozen=True)
class Exporter:
    """One Kepler instance: `samples` scrapes every step from `start`, some lost, some after restarts."""

    instance: str
    start: int
    samples: int
    containers: int = 2
    resets: tuple[int, ...] = ()          # sample indexes where every counter restarts from 0
    gaps: tuple[tuple[int, int], ...] = ()  # [first, stop) sample indexes that were never scraped
    job: str = "kepler-exporter"
    seed: int = 0


@dataclass(frozen=True)
class RawSeries:
    name: str
    labels: Mapping[str, str]
    timestamps: np.ndarray  # int64 unix seconds
    values: np.ndarray      # float64

    @property
    def key(self) -> tuple[str, tuple[tuple[str, str], ...]]:
        return self.name, tuple(sorted(self.labels.items()))


@dataclass(frozen=True)
class KeplerData:
    """A set of exporters sampled on one step, with the ground-truth power model."""

    exporters: tuple[Exporter, ...]
    step: int = 3
    truth: Mapping[str, LinearPower] = field(default_factory=lambda: dict(GROUND_TRUTH))

    # -- ground truth ---------------------------------------------------------------------------
    def increments(self, exporter: Exporter) -> dict[str, np.ndarray]:
        """feature -> (containers, samples) integer increments over the step ending at each sample."""
        rng = np.random.default_rng(exporter.seed)
        shape = (exporter.containers, exporter.samples)
        return {f: np.round(rng.uniform(lo, hi, shape) * self.step) for f, (lo, hi) in RATE_RANGES.items()}

    def node_rates(self, exporter: Exporter) -> dict[str, np.ndarray]:
        """feature -> node-wide rate (per second) over the step ending at each sample."""
        return {f: inc.sum(axis=0) / self.step for f, inc in self.increments(exporter).items()}

    def power(self, exporter: Exporter) -> dict[str, np.ndarray]:
        """component -> watts over the step ending at each sample (the regression target)."""
        rates = self.node_rates(exporter)
        return {component: model.watts(rates) for component, model in self.truth.items()}

    def timestamps(self, exporter: Exporter) -> np.ndarray:
        return exporter.start + self.step * np.arange(exporter.samples, dtype=np.int64)

    # -- what is backfilled --------------------------------------------------------------------
    @cached_property
    def _series(self) -> list[RawSeries]:
        out: list[RawSeries] = []
        for exporter in self.exporters:
            out.extend(self._exporter_series(exporter))
        order = {name: i for i, name in enumerate(dict.fromkeys(s.name for s in out))}
        return sorted(out, key=lambda s: order[s.name])  # stable: families stay contiguous

    def series(self) -> list[RawSeries]:
        return list(self._series)

    def by_name(self) -> dict[str, list[RawSeries]]:
        grouped: dict[str, list[RawSeries]] = {}
        for s in self._series:
            grouped.setdefault(s.name, []).append(s)
        return grouped

    @property
    def sample_count(self) -> int:
        return sum(len(s.values) for s in self._series)

    def _exporter_series(self, exporter: Exporter) -> Iterator[RawSeries]:
        base = {"instance": exporter.instance, "job": exporter.job}
        keep = np.ones(exporter.samples, dtype=bool)
        for first, stop in exporter.gaps:
            keep[first:stop] = False
        ts = self.timestamps(exporter)[keep]

        def counter(increments: np.ndarray, scale: float = 1.0) -> np.ndarray:
            values = np.cumsum(increments)
            for r in sorted(exporter.resets):
                values[r:] -= values[r - 1]
            return (values / scale)[keep]

        for feature, inc in self.increments(exporter).items():
            for c in range(exporter.containers):
                labels = {**base, "container_id": f"{exporter.instance}-c{c:03d}",
                          "container_name": f"app-{c}", "container_namespace": "bench",
                          "pod_name": f"app-{c}-{exporter.instance}"}
                yield RawSeries(f"kepler_container_{feature}_total", labels, ts, counter(inc[c]))

        power = self.power(exporter)
        for component, watts in power.items():
            source = "acpi" if component == "platform" else "rapl-sysfs"
            idle = np.full(exporter.samples, self.truth[component].idle)
            for mode, part in zip(MODES, (idle, watts - idle), strict=True):
                millijoules = np.round(part * self.step * 1000)
                labels = {**base, "mode": mode, "source": source}
                if component != "platform":
                    labels["package"] = "0"
                yield RawSeries(f"kepler_node_{component}_joules_total", labels, ts,
                                counter(millijoules, 1000.0))

    # -- rendering -----------------------------------------------------------------------------
    def write(self, path: str | Path) -> Path:
        """Write the OpenMetrics text that `promtool tsdb create-blocks-from openmetrics` reads."""
        path = Path(path)
        with open(path, "w") as out:
            for name, series_list in self.by_name().items():
                family = name.removesuffix("_total")
                out.write(f"# HELP {family} Kepler-shaped test data.\n# TYPE {family} counter\n")
                for s in series_list:
                    out.write(render_series(s))
            out.write("# EOF\n")
        return path

    @property
    def end(self) -> int:
        return max(int(self.timestamps(e)[-1]) for e in self.exporters)

    @property
    def start(self) -> int:
        return min(e.start for e in self.exporters)


def render_series(s: RawSeries) -> str:
    labels = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(s.labels.items()))
    head = f"{s.name}{{{labels}}} "
    return "".join(f"{head}{v!r} {t}\n" for t, v in zip(s.timestamps.tolist(), s.values.tolist(), strict=True))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def expected_range(series: RawSeries, start: float, end: float, step: float,
                   lookback: float = LOOKBACK_S) -> tuple[np.ndarray, np.ndarray]:
    """What `query_range(<series selector>, start, end, step)` answers for one backfilled series.

    At each evaluation time t Prometheus 2.x takes the newest sample in [t - lookback, t]; grid
    points with none are absent. (Prometheus 3 made the left end open.)
    """
    n = int(math.floor((end - start) / step + 1e-9)) + 1
    grid = start + step * np.arange(n)
    idx = np.searchsorted(series.timestamps, grid, side="right") - 1
    ok = idx >= 0
    ok[ok] = grid[ok] - series.timestamps[idx[ok]] <= lookback
    return grid[ok], series.values[idx[ok]]


# -- ready-made scenarios -------------------------------------------------------------------------

def history(hours: float = 24.25, step: int = 3, containers: int = 2) -> KeplerData:
    """A day of one node (a restart, a 15-minute scrape gap) plus a second node for the last 2 h.

    Long enough (> 11,000 points per series at 3 s) that every range query must be chunked.
    """
    n = int(hours * 3600 / step)
    per_hour = 3600 // step
    node_a = Exporter("node-a:9102", EPOCH, n, containers, resets=(10 * per_hour + 7,),
                      gaps=((16 * per_hour, 16 * per_hour + 300),), seed=1)
    b_samples = 2 * per_hour
    node_b = Exporter("node-b:9102", EPOCH + (n - b_samples) * step, b_samples, containers,
                      resets=(per_hour + per_hour // 2,), seed=2)
    return KeplerData((node_a, node_b), step)


def training_window(minutes: float = 30, step: int = 3, containers: int = 4, *,
                    instance: str = "node-1:9102", start: int = EPOCH, end: int | None = None,
                    seed: int = 7) -> KeplerData:
    """A realistic training window (minutes to an hour) of one node with a known linear model.

    Give `end` (unix seconds, e.g. `recent_end()`) instead of `start` for data that a window
    ending now (`--interval`) finds, as the operator's Jobs query it.
    """
    samples = int(minutes * 60 / step)
    if end is not None:
        start = int(end) - (samples - 1) * step
    return KeplerData((Exporter(instance, start, samples, containers, seed=seed),), step)


def recent_end(step: int = 3, ago: int = 30) -> int:
    """A sample time on the step grid, `ago` seconds or a little more before now."""
    import time

    return (int(time.time()) - ago) // step * step


# -- checking a query answer against what was backfilled ------------------------------------------

def _key(name: str, labels: Mapping[str, str]) -> tuple:
    return name, tuple(sorted((k, v) for k, v in labels.items() if k != "__name__"))


def assert_matches_backfill(result, raws: list[RawSeries], start: float, end: float, step: float) -> int:
    """`result` (a QueryResult) holds exactly what a range query over the raw series must answer:
    the same series, the same points, the same values, nothing else. Returns the number of points."""
    got = {_key(name, s.labels): s for name, series in result.metrics.items() for s in series}
    expected = {}
    for raw in raws:
        ts, values = expected_range(raw, start, end, step)
        if len(ts):
            expected[_key(raw.name, raw.labels)] = (ts, values)
    assert sorted(got) == sorted(expected)
    for key, (ts, values) in expected.items():
        series = got[key]
        assert series.labels["__name__"] == key[0]
        np.testing.assert_array_equal(series.timestamps, ts, err_msg=str(key))
        np.testing.assert_array_equal(series.values, values, err_msg=str(key))
    return sum(len(ts) for ts, _ in expected.values())
