"""The in-memory form of a Prometheus range-query result, shared by every data source.

A query result maps each metric name to its series; each series holds its label set and two
aligned float64 arrays. The query files (`promjson.load`) and Prometheus (`prom.fetch`) both
produce this, so `train` and `estimate` never care where their data came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class Series:
    """One time series: its labels and its samples (unix seconds, value) in time order."""

    labels: Mapping[str, str]
    timestamps: np.ndarray
    values: np.ndarray

    def __post_init__(self) -> None:
        if self.timestamps.shape != self.values.shape:
            raise ValueError("timestamps and values differ in length")

    def __len__(self) -> int:
        return int(self.values.shape[0])


@dataclass(slots=True)
class QueryResult:
    """Metric name -> list of series, as one Prometheus range query per metric returns them."""

    metrics: dict[str, list[Series]] = field(default_factory=dict)

    def __contains__(self, name: str) -> bool:
        return name in self.metrics

    def get(self, name: str) -> list[Series]:
        return self.metrics.get(name, [])

    def names(self) -> list[str]:
        return list(self.metrics)

    @property
    def sample_count(self) -> int:
        return sum(len(s) for series in self.metrics.values() for s in series)

    def time_range(self) -> tuple[float, float] | None:
        starts = [float(s.timestamps[0]) for ss in self.metrics.values() for s in ss if len(s)]
        ends = [float(s.timestamps[-1]) for ss in self.metrics.values() for s in ss if len(s)]
        return (min(starts), max(ends)) if starts else None
