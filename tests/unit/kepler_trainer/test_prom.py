"""The pure parts of kepler_trainer.prom: options, windows, chunks, PromQL, parsing answers (no server)."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings as hsettings, strategies as st

from kepler_trainer import cli, prom, promjson
from kepler_trainer.errors import InputError, PrometheusQueryError
from kepler_trainer.prom import _http, _promql
from tests.support.prometheus import parse_query_args

# -- the grid and its chunks ------------------------------------------------------------------------

@given(start=st.integers(1_600_000_000_000, 1_900_000_000_000), step=st.integers(2, 120_000),
       points=st.integers(1, 60_000), max_points=st.integers(1, prom.MAX_POINTS_PER_SERIES))
@hsettings(max_examples=300, deadline=None)
def test_chunks_cover_the_grid_once_within_the_limit(start, step, points, max_points):
    end = start + (points - 1) * step + step // 2  # an end between two grid points still ends the grid
    settings = prom.PromSettings(start=start / 1000, end=end / 1000, step=step / 1000, max_points=max_points)
    chunks = prom.chunk_windows(settings)
    indexes = [i for first, last in chunks for i in range(first, last + 1)]
    assert indexes == list(range(settings.points))
    assert all(last - first + 1 <= max_points for first, last in chunks)
    assert settings.points == points


# -- options ----------------------------------------------------------------------------------------

def test_times_accept_utc_strings_and_unix_seconds():
    assert cli.parse_time("2026-11-01T00:00:00Z") == 1793491200
    assert cli.parse_time("1793491200.5") == 1793491200.5
    assert cli.parse_time("2026-11-01T01:00:00+01:00") == 1793491200
    assert cli.parse_time("2026-11-01 00:00:00") == 1793491200
    with pytest.raises(argparse.ArgumentTypeError, match="invalid time"):
        cli.parse_time("yesterday")


@pytest.mark.parametrize("text, seconds", [("300", 300), ("2.5", 2.5), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5)])
def test_durations(text, seconds):
    assert cli.parse_seconds(text) == seconds


@pytest.mark.parametrize("text", ["0", "-3", "5x", "m", "inf"])
def test_bad_durations(text):
    with pytest.raises(argparse.ArgumentTypeError):
        cli.parse_seconds(text)


def test_window_precedence_start_end_then_benchmark_then_interval(tmp_path):
    bench = tmp_path / "stressng.json"
    bench.write_text(json.dumps({"startTimeUTC": "2026-11-01T00:00:00Z", "endTimeUTC": "2026-11-01T01:00:00Z"}))
    explicit = parse_query_args("--start-time", "100", "--end-time", "200", "--benchmark", str(bench))
    assert (cli.settings_from_args(explicit).start, cli.settings_from_args(explicit).end) == (100, 200)

    from_file = parse_query_args("--benchmark", "stressng")  # a bare stem under --data-path, as upstream
    from_file.data_path = str(tmp_path)
    settings = cli.settings_from_args(from_file)
    assert (settings.start, settings.end) == (1793491200, 1793494800)

    recent = cli.settings_from_args(parse_query_args("--interval", "10m"))
    assert recent.end - recent.start == 600

    only_start = cli.settings_from_args(parse_query_args("--start-time", "1000", "--interval", "60"))
    assert (only_start.start, only_start.end) == (1000, 1060)


def test_a_cpe_benchmark_resource_gives_the_window(tmp_path):
    cr = {"metadata": {"creationTimestamp": "2026-11-01T00:00:00Z"},
          "status": {"results": [{"repetitions": [{"pushedTime": "2026-11-01 00:30:00.123456 +0000 UTC"}]}]}}
    path = tmp_path / "cr.json"
    path.write_text(json.dumps(cr))
    assert prom.read_window(path) == (1793491200, 1793493000)


@pytest.mark.parametrize("content", ["{", '{"startTimeUTC": "2026-11-01T00:00:00Z"}', '{"other": 1}', "[]"])
def test_a_bad_benchmark_file_is_an_input_error(tmp_path, content):
    path = tmp_path / "bench.json"
    path.write_text(content)
    with pytest.raises(InputError, match="bench.json"):
        prom.read_window(path)
    with pytest.raises(InputError, match="not found"):
        cli.settings_from_args(parse_query_args("--benchmark", str(tmp_path / "missing.json")))


def test_an_empty_window_is_refused_before_any_request():
    with pytest.raises(PrometheusQueryError, match="bad window: end .* is not after start"):
        cli.settings_from_args(parse_query_args("--start-time", "200", "--end-time", "100"))


@pytest.mark.parametrize("argv, message", [
    (["-s", "localhost:9090"], "http"),
    (["--concurrency", "0"], "concurrency"),
    (["--retries", "-1"], "retries"),
])
def test_bad_settings_are_input_errors(argv, message):
    with pytest.raises(InputError, match=message):
        cli.settings_from_args(parse_query_args(*argv))


def test_bad_label_filters_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exc:
        parse_query_args("--label-filter", "no-operator")
    assert exc.value.code == 2 and "bad label filter" in capsys.readouterr().err


def test_environment_defaults(monkeypatch):
    monkeypatch.setenv("PROM_SERVER", "https://prometheus.monitoring.svc:9091/")
    monkeypatch.setenv("PROM_QUERY_STEP", "15")
    monkeypatch.setenv("PROM_THIRDPARTY_METRICS", "node_cpu_seconds_total,up")
    settings = cli.settings_from_args(parse_query_args())
    assert settings.server == "https://prometheus.monitoring.svc:9091"
    assert settings.step == 15 and settings.thirdparty_metrics == ("node_cpu_seconds_total", "up")
    assert not settings.insecure_skip_tls_verify  # verified unless asked otherwise


# -- PromQL -----------------------------------------------------------------------------------------

def test_filters_go_into_the_selector_escaped():
    filters = [prom.LabelMatcher.parse('pod_name=a"b\\c'), prom.LabelMatcher.parse("instance=~node-[12].*")]
    assert prom.selector("kepler_node_package_joules_total", filters) == \
        'kepler_node_package_joules_total{pod_name="a\\"b\\\\c",instance=~"node-[12].*"}'
    assert prom.selector("up") == "up"


def test_label_equals_is_always_an_equality_with_a_literal_value(capsys):
    """What the operator passes (issue 12): a value such as `~.*` must not turn the filter into a regex."""
    settings = cli.settings_from_args(parse_query_args("--label-equals", "instance=~.*",
                                                        "--label-equals", 'pod="x"\n', "--label-filter", "job!=a"))
    assert prom.selector("up", settings.label_filters) == 'up{job!="a",instance="~.*",pod="\\"x\\"\\n"}'
    with pytest.raises(SystemExit) as exc:
        parse_query_args("--label-equals", "bad-name=x")
    assert exc.value.code == 2 and "bad label filter" in capsys.readouterr().err


def test_discovery_matches_the_prefix_and_third_party_names():
    settings = prom.PromSettings(start=0, end=60, metric_prefix="kepler_", thirdparty_metrics=("up",),
                                 label_filters=(prom.LabelMatcher.parse("job=kepler"),))
    assert _promql.discovery_matchers(settings) == ['{__name__=~"kepler_.*",job="kepler"}',
                                                  '{__name__="up",job="kepler"}']


# -- parsing answers --------------------------------------------------------------------------------

def _answer(series: list[dict], **extra) -> bytes:
    return orjson.dumps({"status": "success", "data": {"resultType": "matrix", "result": series}, **extra})


SERIES = [
    {"metric": {"__name__": "kepler_x_total", "odd": 'quote " and ]] and \\ and ,'},
     "values": [[1793491200, "1"], [1793491203.5, "2.25"], [1793491206, "NaN"], [1793491209, "+Inf"],
                [1793491212, "-Inf"], [1793491215, "1e+300"]]},
    {"metric": {}, "values": [[1793491200, "0"]]},
]


def test_the_answer_reader_agrees_with_a_full_json_decode():
    fast = promjson.read_answer(_answer(SERIES))
    assert [s.labels for s in fast] == [s["metric"] for s in SERIES]
    for parsed, written in zip(fast, SERIES, strict=True):
        np.testing.assert_array_equal(parsed.timestamps, [float(t) for t, _ in written["values"]])
        np.testing.assert_array_equal(parsed.values, [float(v) for _, v in written["values"]])
    assert math.isnan(fast[0].values[2]) and fast[0].values[3] == math.inf and fast[0].values[5] == 1e300


def test_other_layouts_fall_back_to_json():
    reordered = [{"values": s["values"], "metric": s["metric"]} for s in SERIES]
    parsed = promjson.read_answer(_answer(reordered, warnings=["partial"]))
    assert [len(s) for s in parsed] == [6, 1] and parsed[0].labels == SERIES[0]["metric"]
    assert promjson.read_answer(_answer([])) == []


@pytest.mark.parametrize("body, message", [
    (b'{"status":"error","errorType":"bad_data","error":"parse error"}', "parse error"),
    (b'{"status":"success","data":{"resultType":"vector","result":[]}}', "vector"),
    (b"<html>proxy login</html>", "unexpected answer"),
])
def test_unexpected_answers_are_query_errors(body, message):
    with pytest.raises(PrometheusQueryError, match=message):
        promjson.read_answer(body, "q")


def test_output_path_follows_upstreams_convention(tmp_path):
    assert prom.output_path("kepler_query", tmp_path) == tmp_path / "kepler_query.json"
    assert prom.output_path("elsewhere/q.json", tmp_path) == Path("elsewhere/q.json")
    assert prom.output_path("/abs/q", tmp_path) == Path("/abs/q")


@pytest.mark.parametrize("url, remote", [
    ("https://prometheus-k8s.openshift-monitoring.svc:9091", True), ("http://10.0.0.5:9090/prom", True),
    ("http://localhost:9090", False), ("http://127.0.0.1:9090", False), ("http://[::1]:9090", False),
    ("http://user:pw@127.0.0.1:9090/x", False),
])
def test_compression_is_asked_for_only_over_a_network(url, remote):
    assert _http.remote(url) is remote
