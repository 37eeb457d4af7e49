"""Input checks (issue 13) on query results built in memory: what is dropped, merged, counted or refused."""

from __future__ import annotations

import numpy as np
import pytest

from kepler_trainer import promjson
from kepler_trainer.checks import MAX_COUNTER, check_input
from kepler_trainer.data import QueryResult, Series
from kepler_trainer.errors import InputError

COUNTER = "kepler_node_package_joules_total"
LABELS = {"instance": "n1", "mode": "dynamic"}


def result(*series: Series, metric: str = COUNTER) -> QueryResult:
    return QueryResult({metric: list(series)})


def series(ts, vs, labels=LABELS) -> Series:
    return Series(dict(labels), np.asarray(ts, float), np.asarray(vs, float))


def test_non_finite_negative_and_huge_samples_are_dropped_and_counted():
    values = np.arange(100, dtype=float) * 10
    values[[3, 4, 5, 6]] = [np.inf, np.nan, -1.0, MAX_COUNTER * 2]
    ts = 1.7e9 + 3 * np.arange(100)
    ts[7] = np.nan
    checked, report = check_input(result(series(ts, values)))
    kept = checked.metrics[COUNTER][0]
    assert (report.samples, report.non_finite, report.out_of_range, report.dropped) == (100, 3, 2, 5)
    assert len(kept) == 95 and np.isfinite(kept.values).all() and np.isfinite(kept.timestamps).all()


def test_more_than_a_tenth_bad_in_one_metric_is_refused():
    values = np.arange(100, dtype=float)
    values[:11] = np.inf
    with pytest.raises(InputError, match=f"11 of 100 samples of {COUNTER}"):
        check_input(result(series(1.7e9 + np.arange(100), values)))


def test_overlapping_copies_of_a_series_are_merged_to_their_union():
    ts = 1.7e9 + np.arange(10)
    first, second = series(ts[:7], np.arange(7)), series(ts[4:], np.arange(4, 10))
    checked, report = check_input(result(first, second, series(ts, np.zeros(10), {"instance": "n2"})))
    merged = [s for s in checked.metrics[COUNTER] if s.labels["instance"] == "n1"]
    assert len(merged) == 1 and merged[0].timestamps.tolist() == ts.tolist()
    assert merged[0].values.tolist() == list(range(10))
    assert (report.repeated_series, report.repeated_samples) == (1, 3)


def test_a_series_contradicting_its_copy_is_refused():
    ts = 1.7e9 + np.arange(5)
    with pytest.raises(InputError, match="different values"):
        check_input(result(series(ts, np.arange(5)), series(ts, np.arange(5) + 1)))


def test_millisecond_timestamps_are_refused():
    with pytest.raises(InputError, match="milliseconds"):
        check_input(result(series(1.7e12 + 1000 * np.arange(5), np.arange(5))))


def test_other_metrics_are_left_alone():
    gauge = series([1.7e9, 1.7e9 + 1], [np.nan, -5.0])
    checked, report = check_input(result(gauge, metric="kepler_node_info"))
    assert checked.metrics["kepler_node_info"][0] is gauge and report.samples == 0


def test_the_query_output_parser_refuses_deep_nesting_without_recursion(tmp_path):
    path = tmp_path / "deep.json"
    nested = "[" * 100_000 + "]" * 100_000
    path.write_text(f'{{"{COUNTER}": [{{"metric": {{}}, "junk": {nested}, "values": []}}]}}')
    with pytest.raises(InputError, match="nested deeper than"):
        promjson.load(path)
    path.write_text(f'{{"{COUNTER}": [{{"metric": {{"a": "b"}}, '
                    '"junk": {"x": [1, {"y": [2, []]}, "s"], "z": {}}, "values": [[1, "2"], [2, "3"]]}]}')
    assert promjson.load(path).metrics[COUNTER][0].values.tolist() == [2.0, 3.0]
