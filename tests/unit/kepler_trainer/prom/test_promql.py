"""kepler_trainer.prom._promql: the query builder, pure functions of the settings."""

from __future__ import annotations

from hypothesis import given, strategies as st

from kepler_trainer import prom
from kepler_trainer.prom import _promql


def test_a_prefix_is_matched_literally_inside_the_discovery_regex():
    selection = prom.MetricSelection(metric_prefix="kepler.x+", thirdparty_metrics=('we"ird',))
    assert _promql.discovery_matchers(selection) == ['{__name__=~"kepler\\\\.x\\\\+.*"}', '{__name__="we\\"ird"}']


def test_range_params_are_seconds_with_milliseconds():
    assert _promql.range_params("up", 1_793_491_200_000, 1_793_491_203_500, 1_500) == {
        "query": "up", "start": "1793491200.000", "end": "1793491203.500", "step": "1.500"}


@given(value=st.text(max_size=20))
def test_a_label_value_survives_promql_quoting(value):
    matcher = prom.LabelMatcher(name="pod", value=value)
    quoted = _promql.selector("up", [matcher]).removeprefix("up{pod=").removesuffix("}")
    # PromQL strings follow Go's escapes: undoing ours must give the value back
    unquoted = quoted[1:-1].replace("\\n", "\n").replace('\\"', '"').replace("\\\\", "\\")
    assert quoted[0] == quoted[-1] == '"' and unquoted == value
    assert '"' not in quoted[1:-1].replace('\\"', "")


def test_the_last_chunk_ends_on_the_last_grid_point():
    window = prom.QueryWindow(start=0, end=100, step=3, max_points=10)  # points 0..33 (t = 0 .. 99)
    assert _promql.chunk_windows(window) == [(0, 9), (10, 19), (20, 29), (30, 33)]
