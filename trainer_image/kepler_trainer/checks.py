"""The input's samples checked before anything is learnt from them: bad ones dropped and counted.

A Kepler counter (`kepler_*_total`) is a non-negative number of joules, instructions, ... that only
grows between restarts. A sample that is not a finite number, or outside [0, MAX_COUNTER], cannot
be one: left in, a single `+Inf` reads as a counter restart and turns every rate after it into
nonsense. Such samples are dropped and counted; when more than MAX_BAD_FRACTION of the samples of
one metric are bad the input is refused (exit 3), because the rest is not to be trusted either.

Two checks refuse outright: timestamps that are not unix seconds (milliseconds divide every rate by
1000), and one label set given twice with different values at the same time. The same series given
twice (`-i A,A`, or overlapping dumps) is merged: each timestamp counted once, the repeats counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from .data import QueryResult, Series
from .errors import InputError

MAX_COUNTER = 2.0 ** 64
"""No Kepler counter exceeds an unsigned 64-bit integer."""
MAX_BAD_FRACTION = 0.1
"""Above this share of bad samples the input is refused instead of cleaned."""
MAX_UNIX_SECONDS = 1e11
"""Year 5138: a larger timestamp is in milliseconds (or finer), not the seconds Prometheus returns."""
MAX_NODE_WATTS = 100_000.0
"""No node draws 100 kW: a larger power rate is a corrupt counter step, not a measurement."""


@dataclass
class InputReport:
    """What the checks found; written to the run summary and the pipeline's metadata."""

    samples: int = 0               # counter samples checked
    non_finite: int = 0            # NaN or infinite value or timestamp: dropped
    out_of_range: int = 0          # negative or above MAX_COUNTER: dropped
    repeated_series: int = 0       # a label set seen again (merged)
    repeated_samples: int = 0      # a sample of a repeated series already seen: counted once
    absurd_power_rows: int = 0     # node power rows above MAX_NODE_WATTS: dropped (see extract)

    @property
    def dropped(self) -> int:
        return self.non_finite + self.out_of_range

    def as_dict(self) -> dict:
        return {**asdict(self), "dropped": self.dropped}


def _is_counter(metric: str) -> bool:
    return metric.startswith("kepler_") and metric.endswith("_total")


def prometheus_counter(metric: str) -> bool:
    """Any counter by Prometheus' naming rule: what a PromQL feature set reads (node_*_total, ...)."""
    return metric.endswith("_total")


def check_input(result: QueryResult,
                is_counter: Callable[[str], bool] = _is_counter) -> tuple[QueryResult, InputReport]:
    """The result with bad counter samples dropped and repeated series merged, and the report.

    InputError when the timestamps are not seconds, a series contradicts itself, or too much is bad."""
    report = InputReport()
    checked = QueryResult()
    for metric, series_list in result.metrics.items():
        if not is_counter(metric):
            checked.metrics[metric] = series_list
            continue
        before = InputReport(**{k: v for k, v in report.__dict__.items()})
        cleaned = [_clean(s, report) for s in series_list]
        samples, dropped = report.samples - before.samples, report.dropped - before.dropped
        if samples and dropped > MAX_BAD_FRACTION * samples:
            raise InputError(f"{dropped:,} of {samples:,} samples of {metric} are not usable "
                             f"({report.non_finite - before.non_finite:,} not finite, "
                             f"{report.out_of_range - before.out_of_range:,} negative or above 2^64): "
                             f"more than {MAX_BAD_FRACTION:.0%}, so the input is refused")
        checked.metrics[metric] = _merge_repeats(metric, cleaned, report)
    _check_units(checked)
    return checked, report


def _clean(series: Series, report: InputReport) -> Series:
    ts, vs = series.timestamps, series.values
    report.samples += ts.size
    finite = np.isfinite(ts) & np.isfinite(vs)
    in_range = (vs >= 0) & (vs <= MAX_COUNTER)
    keep = finite & in_range
    if keep.all():
        return series
    report.non_finite += int(ts.size - np.count_nonzero(finite))
    report.out_of_range += int(np.count_nonzero(finite & ~in_range))
    return Series(series.labels, ts[keep], vs[keep])


def _merge_repeats(metric: str, series_list: list[Series], report: InputReport) -> list[Series]:
    """One series per label set: repeats merged, each timestamp once; InputError on a contradiction."""
    groups: dict[frozenset, list[Series]] = {}
    for series in series_list:
        groups.setdefault(frozenset(series.labels.items()), []).append(series)
    if len(groups) == len(series_list):
        return series_list
    merged = []
    for parts in groups.values():
        if len(parts) == 1:
            merged.append(parts[0])
            continue
        report.repeated_series += len(parts) - 1
        merged.append(_merge(metric, parts, report))
    return merged


def _merge(metric: str, parts: list[Series], report: InputReport) -> Series:
    ts = np.concatenate([p.timestamps for p in parts])
    vs = np.concatenate([p.values for p in parts])
    order = np.argsort(ts, kind="stable")
    ts, vs = ts[order], vs[order]
    repeat = np.zeros(ts.size, dtype=bool)
    repeat[1:] = ts[1:] == ts[:-1]
    same = vs[1:][repeat[1:]] == vs[:-1][repeat[1:]]
    if not same.all():
        at = float(ts[1:][repeat[1:]][~same][0])
        raise InputError(f"{metric}{dict(parts[0].labels)} is given twice with different values at "
                         f"timestamp {at:.3f}: the inputs contradict each other")
    report.repeated_samples += int(np.count_nonzero(repeat))
    return Series(parts[0].labels, ts[~repeat], vs[~repeat])


def _check_units(result: QueryResult) -> None:
    latest = max((float(s.timestamps.max()) for ss in result.metrics.values() for s in ss if len(s)), default=0.0)
    if latest > MAX_UNIX_SECONDS:
        raise InputError(f"timestamps are not unix seconds (latest {latest:.0f}, after year 5000): milliseconds? "
                         "Prometheus returns seconds; divide the timestamps by 1000")


def drop_absurd_power(frame, columns: list[str], report: InputReport | None):
    """Node power rows within [0, MAX_NODE_WATTS] in every column; the others counted in `report`."""
    sane = (frame[columns] <= MAX_NODE_WATTS).all(axis=1)
    if sane.all():
        return frame
    if report is not None:
        report.absurd_power_rows += int((~sane).sum())
    return frame[sane].reset_index(drop=True)


def check_table(data, features: list[str], power: list[str], path: object):
    """A preprocessed table (train_from_data) without rows of non-numeric, non-finite or impossible
    values (features outside [0, MAX_COUNTER], power outside [0, MAX_NODE_WATTS]); InputError when
    more than MAX_BAD_FRACTION of the rows are such."""
    import pandas as pd

    numbers = data[features + power].apply(pd.to_numeric, errors="coerce")
    values = numbers.to_numpy(float)
    limits = np.array([MAX_COUNTER] * len(features) + [MAX_NODE_WATTS] * len(power))
    sane = (np.isfinite(values) & (values >= 0) & (values <= limits)).all(axis=1)
    bad = int((~sane).sum())
    if bad > MAX_BAD_FRACTION * len(data):
        raise InputError(f"{path}: {bad:,} of {len(data):,} rows hold a value that is not a finite number in "
                         f"range (features 0..2^64, power 0..{MAX_NODE_WATTS:,.0f} W): the table is refused")
    return data.assign(**{c: numbers[c] for c in features + power})[sane]
