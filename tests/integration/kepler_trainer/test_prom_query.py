"""`query` against a real Prometheus backfilled with a day of Kepler-shaped data at 3 s.

Every answer is checked against what was backfilled, sample for sample, through Prometheus'
documented instant-vector semantics (`openmetrics.expected_range`).
"""

from __future__ import annotations

import numpy as np
import pytest

from kepler_trainer import cli, prom, promjson
from kepler_trainer.errors import PrometheusQueryError
from tests.support.openmetrics import LOOKBACK_S, assert_matches_backfill, recent_end, training_window
from tests.support.prometheus import parse_query_args, query_args as window_args

pytestmark = pytest.mark.prometheus


def test_a_day_at_3s_is_chunked_and_written_sample_for_sample(session_prometheus, tmp_path):
    data = session_prometheus.data
    args = window_args(session_prometheus.url, data.start, data.end, "-o", "day")
    settings = cli.settings_from_args(args)
    assert settings.points > 2 * prom.MAX_POINTS_PER_SERIES  # the window needs three chunks
    assert len(prom.chunk_windows(settings)) == 3

    summary = cli.run_query(args, tmp_path)

    assert summary["path"] == str(tmp_path / "day.json")
    written = promjson.load(summary["path"])  # the file `train -i` reads
    points = assert_matches_backfill(written, data.series(), settings.start, settings.end, settings.step)
    assert summary["samples"] == points == written.sample_count
    assert summary["metrics"] == len(data.by_name())
    assert summary["series"] == len(data.series())
    assert [p.name for p in tmp_path.iterdir()] == ["day.json"]  # no temporary left behind


def test_resets_and_gaps_come_through_as_they_are(session_prometheus):
    data = session_prometheus.data
    node_a = data.exporters[0]
    (gap_first, gap_stop), = node_a.gaps
    settings = cli.settings_from_args(window_args(session_prometheus.url, data.start, data.end,
                                                   "--label-filter", f"instance={node_a.instance}"))
    result = prom.fetch(settings, metric_filter={"kepler_node_package_joules_total"})

    dynamic = next(s for s in result.get("kepler_node_package_joules_total") if s.labels["mode"] == "dynamic")
    drops = np.flatnonzero(np.diff(dynamic.values) < 0) + 1
    reset_time = node_a.start + node_a.resets[0] * data.step
    assert dynamic.timestamps[drops].tolist() == [reset_time]  # one reset, where it happened
    jumps = np.diff(dynamic.timestamps)
    assert set(jumps.tolist()) == {data.step, (gap_stop - gap_first + 1) * data.step - LOOKBACK_S}
    # points inside the lookback after the last scrape before the gap repeat its value, as Prometheus does
    before_gap = node_a.start + (gap_first - 1) * data.step
    held = (dynamic.timestamps > before_gap) & (dynamic.timestamps <= before_gap + LOOKBACK_S)
    assert held.sum() == LOOKBACK_S // data.step
    assert np.unique(dynamic.values[held]).size == 1


@pytest.mark.parametrize("matcher, instances", [
    ("instance=node-b:9102", {"node-b:9102"}),
    ("instance!=node-b:9102", {"node-a:9102"}),
    ("instance=~node-.*", {"node-a:9102", "node-b:9102"}),
])
def test_label_filters_keep_two_exporters_apart(session_prometheus, matcher, instances):
    data = session_prometheus.data
    node_b = data.exporters[1]
    start = node_b.start
    settings = cli.settings_from_args(window_args(session_prometheus.url, start, data.end,
                                                   "--label-filter", matcher, "--label-filter", "job=kepler-exporter"))
    result = prom.fetch(settings)
    raws = [s for s in data.series() if s.labels["instance"] in instances]
    assert {s.labels["instance"] for ss in result.metrics.values() for s in ss} == instances
    assert_matches_backfill(result, raws, settings.start, settings.end, settings.step)


def test_chunk_size_and_concurrency_do_not_change_the_answer(session_prometheus):
    data = session_prometheus.data
    node_b = data.exporters[1]
    base = cli.settings_from_args(window_args(session_prometheus.url, node_b.start, node_b.start + 3600,
                                               "--label-filter", f"instance={node_b.instance}"))
    wanted = {"kepler_node_package_joules_total", "kepler_container_cpu_instructions_total"}
    raws = [s for s in data.series() if s.labels["instance"] == node_b.instance and s.name in wanted]
    assert base.points == 1201
    for max_points, concurrency in [(11_000, 1), (1200, 4), (97, 8), (1, 3)]:
        settings = base.model_copy(update={"max_points": max_points, "concurrency": concurrency})
        if max_points == 1:  # one request per point: keep it to a short window
            settings = settings.model_copy(update={"end": settings.start + 60})
        result = prom.fetch(settings, metric_filter=wanted)
        assert assert_matches_backfill(result, raws, settings.start, settings.end, settings.step) == result.sample_count


def test_a_chunk_over_the_servers_sample_limit_is_split(prometheus_factory):
    data = training_window(minutes=60, containers=4)
    handle = prometheus_factory(openmetrics=data, extra_args=["--query.max-samples=2000"])
    settings = cli.settings_from_args(window_args(handle.url, data.start, data.end))
    assert settings.points * 4 > 2000  # one request per metric would be refused

    result = prom.fetch(settings)

    assert_matches_backfill(result, data.series(), settings.start, settings.end, settings.step)


def test_a_single_point_over_the_sample_limit_fails_with_the_servers_reason(prometheus_factory):
    data = training_window(minutes=5, containers=4)
    handle = prometheus_factory(openmetrics=data, extra_args=["--query.max-samples=2"])
    settings = cli.settings_from_args(window_args(handle.url, data.start, data.end))
    with pytest.raises(PrometheusQueryError, match="HTTP 422: .*too many samples"):
        prom.fetch(settings)


def test_recent_data_is_found_by_a_window_ending_now(prometheus_factory):
    """The operator's Jobs pass --interval: the window ends when the Job runs."""
    data = training_window(minutes=10, containers=2, end=recent_end())
    handle = prometheus_factory(openmetrics=data)
    settings = cli.settings_from_args(parse_query_args("-s", handle.url, "--interval", "15m"))
    result = prom.fetch(settings)
    assert set(result.metrics) == set(data.by_name())
    assert result.sample_count >= data.sample_count  # every sample, plus lookback repeats after the last
    last = max(s.timestamps[-1] for ss in result.metrics.values() for s in ss)
    assert data.end <= last <= settings.end
