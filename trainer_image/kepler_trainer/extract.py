"""From a query result to feature tables: per-second rates, summed per node and timestamp.

Every Kepler metric used here is a counter. A series becomes per-interval rates (a drop in the
counter is a restart from zero, as Prometheus' `rate()` reads it), and the rates of all series that
share a node and a timestamp are summed: all containers for a workload feature, all sockets and both
modes (idle, dynamic) for a power component. Rows are keyed by (instance, timestamp), so two Kepler
exporters in one Prometheus stay two nodes instead of being summed into one (upstream bug #519).
Everything is vectorised: the cost is linear in the number of samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .checks import InputReport, drop_absurd_power
from .data import QueryResult, Series
from .errors import NoKeplerMetricsError, NoPowerMetricsError
from .features import CONTAINER_PREFIX, NODE_PREFIX, EnergySource, power_column, source_labels

KEYS = ["instance", "timestamp"]
VM_JOB = "vm"
SMOOTH_WINDOW = 30


def counter_rates(series: Series) -> tuple[np.ndarray, np.ndarray]:
    """Per-second rates at each sample after the first; a negative step is a counter restart."""
    ts, vs = series.timestamps, series.values
    if ts.size < 2:
        return ts[:0], vs[:0]
    dt, dv = np.diff(ts), np.diff(vs)
    dv = np.where(dv < 0, vs[1:], dv)
    ok = (dt > 0) & np.isfinite(dv)
    rates = dv[ok] / dt[ok]
    finite = np.isfinite(rates)  # a step over a tiny interval can overflow
    return (ts[1:][ok], rates) if finite.all() else (ts[1:][ok][finite], rates[finite])


def _instance(labels) -> str:
    return labels.get("instance", "")


def _sum_per_key(parts: list[tuple[str, np.ndarray, np.ndarray]], name: str) -> pd.DataFrame:
    """Sum rates per (instance, timestamp); also count the series that contributed."""
    frames = []
    for instance in sorted({p[0] for p in parts}):
        ts = np.concatenate([p[1] for p in parts if p[0] == instance])
        rates = np.concatenate([p[2] for p in parts if p[0] == instance])
        uniq, inverse = np.unique(ts, return_inverse=True)
        frames.append(pd.DataFrame({
            "instance": instance,
            "timestamp": uniq,
            name: np.bincount(inverse, weights=rates, minlength=uniq.size),
            f"__n_{name}": np.bincount(inverse, minlength=uniq.size),
        }))
    return pd.concat(frames, ignore_index=True)


def workload_features(result: QueryResult, exclude_containers: frozenset[str] = frozenset(),
                      vm: bool = False) -> dict[str, pd.DataFrame]:
    """Feature name -> per-node sums of container rates (with a contributor count)."""
    out: dict[str, pd.DataFrame] = {}
    for metric in result.names():
        if not (metric.startswith(CONTAINER_PREFIX) and metric.endswith("_total")) or "joules" in metric:
            continue
        feature = metric[len(CONTAINER_PREFIX):-len("_total")]
        parts = []
        for series in result.get(metric):
            if (series.labels.get("job") == VM_JOB) != vm:
                continue
            if series.labels.get("container_name") in exclude_containers:
                continue
            ts, rates = counter_rates(series)
            if ts.size:
                parts.append((_instance(series.labels), ts, rates))
        if parts:
            out[feature] = _sum_per_key(parts, feature)
    return out


def node_power(result: QueryResult, source: EnergySource) -> pd.DataFrame:
    """Per-node power of each component in watts, rows where every component was measured."""
    wanted = source_labels(source)
    frame: pd.DataFrame | None = None
    for component in source.components:
        parts = []
        for series in result.get(f"{NODE_PREFIX}{component}_joules_total"):
            if series.labels.get("source", source.name) not in wanted:
                continue
            ts, rates = counter_rates(series)
            if ts.size:
                parts.append((_instance(series.labels), ts, rates))
        if not parts:
            continue
        column = _sum_per_key(parts, power_column(component))
        # a socket or mode missing at a timestamp would under-count the node: keep full rows only
        n = column.pop(f"__n_{power_column(component)}")
        column = column[n == column.assign(n=n).groupby("instance")["n"].transform("max")]
        frame = column if frame is None else frame.merge(column, on=KEYS, how="inner")
    if frame is None:
        raise NoPowerMetricsError(
            f"no node power metric for energy source {source.name!r} "
            f"(looked for {NODE_PREFIX}<{'|'.join(source.components)}>_joules_total with source={source.name})")
    columns = [power_column(c) for c in source.components]
    for col in columns:  # a component the meter does not report (e.g. uncore) reads as 0 W
        if col not in frame:
            frame[col] = 0.0
    frame = frame[frame[columns].sum(axis=1) > 0]  # stale points repeat the counter: no new data
    return frame[KEYS + columns].reset_index(drop=True)


@dataclass
class Extracted:
    """All features of one input and the power of each energy source, per node and timestamp."""

    features: dict[str, pd.DataFrame]
    power: dict[str, pd.DataFrame]

    @property
    def available_features(self) -> set[str]:
        return set(self.features)

    def table(self, features: list[str], source: str, smooth: bool = False) -> pd.DataFrame:
        """timestamp, instance, the features, the source's power columns: rows where all were seen."""
        table = self.power[source]
        for name in features:
            part = self.features[name]
            part = part[part[f"__n_{name}"] > 0][KEYS + [name]]
            table = table.merge(part, on=KEYS, how="inner")
        power_cols = [c for c in table.columns if c.endswith("_power")]
        table = table[KEYS + sorted(features) + power_cols].sort_values(KEYS, kind="stable")
        if smooth:
            table = _smooth(table, sorted(features) + power_cols)
        return table.reset_index(drop=True)

    def features_only(self, features: list[str]) -> pd.DataFrame:
        """The feature rows alone (for estimation on data without power)."""
        table: pd.DataFrame | None = None
        for name in features:
            part = self.features[name][KEYS + [name]]
            table = part if table is None else table.merge(part, on=KEYS, how="outer")
        assert table is not None
        return table.fillna(0.0).sort_values(KEYS, kind="stable").reset_index(drop=True)


def _smooth(table: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    rolled = table.groupby("instance", sort=False)[columns].rolling(SMOOTH_WINDOW).mean()
    table = table.copy()
    table[columns] = rolled.reset_index(level=0, drop=True).sort_index()
    return table.dropna(subset=columns)


def extract(result: QueryResult, sources: list[EnergySource], *, require_power: bool = True,
            exclude_containers: frozenset[str] = frozenset(), report: InputReport | None = None) -> Extracted:
    """Turn a query result into per-node feature sums and per-source power (rows of impossible power
    dropped, and counted in `report`)."""
    features = workload_features(result, exclude_containers)
    if not features:
        raise NoKeplerMetricsError(
            f"no Kepler workload metric ({CONTAINER_PREFIX}<feature>_total with at least two samples) in the input")
    power: dict[str, pd.DataFrame] = {}
    for source in sources:
        try:
            frame = node_power(result, source)
            power[source.name] = drop_absurd_power(frame, [power_column(c) for c in source.components], report)
        except NoPowerMetricsError:
            if require_power:
                raise
    return Extracted(features, power)
