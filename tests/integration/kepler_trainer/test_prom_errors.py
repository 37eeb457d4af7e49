"""Connection settings and failure modes against a real Prometheus (and a real HTTP hop in front of it)."""

from __future__ import annotations

import time

import pytest

from kepler_trainer import cli, prom
from kepler_trainer.errors import (
    InputError,
    NoKeplerMetricsError,
    PrometheusQueryError,
    PrometheusUnreachableError,
    TooFewSamplesError,
)
from tests.support.openmetrics import assert_matches_backfill, training_window
from tests.support.prometheus import GatewayProxy, free_port, query_args as window_args

pytestmark = pytest.mark.prometheus

SMALL = training_window(minutes=10, containers=2)


@pytest.fixture
def small_prometheus(prometheus_factory):
    return prometheus_factory(openmetrics=SMALL)


@pytest.fixture
def proxy_factory():
    proxies: list[GatewayProxy] = []

    def start(upstream: str, **kwargs) -> GatewayProxy:
        proxies.append(GatewayProxy(upstream, **kwargs))
        return proxies[-1]

    yield start
    for proxy in proxies:
        proxy.stop()


def small_args(url: str, *extra: str):
    return window_args(url, SMALL.start, SMALL.end, *extra)


def one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_unreachable_server_fails_fast_with_the_reason():
    url = f"http://127.0.0.1:{free_port()}"
    began = time.monotonic()
    with pytest.raises(PrometheusUnreachableError) as exc:
        prom.fetch(cli.settings_from_args(small_args(url, "--retries", "1")))
    assert time.monotonic() - began < 10
    message = one_line(exc)
    assert url in message and "Connection refused" in message
    assert exc.value.exit_code == 8


def test_5xx_answers_are_retried_with_backoff(small_prometheus, proxy_factory):
    proxy = proxy_factory(small_prometheus.url, fail_first=2)
    result = prom.fetch(cli.settings_from_args(small_args(proxy.url, "--retries", "3", "--concurrency", "1")))
    assert_matches_backfill(result, SMALL.series(), SMALL.start, SMALL.end, SMALL.step)
    assert [status for _, status in proxy.requests[:3]] == [503, 503, 200]


def test_5xx_after_the_last_retry_means_unreachable(small_prometheus, proxy_factory):
    proxy = proxy_factory(small_prometheus.url, fail_first=10**6, status=502)
    with pytest.raises(PrometheusUnreachableError, match="HTTP 502") as exc:
        prom.fetch(cli.settings_from_args(small_args(proxy.url, "--retries", "2")))
    one_line(exc)
    assert len(proxy.requests) == 3  # the first try and two retries, then no more


def test_bearer_token_from_a_file(small_prometheus, proxy_factory, tmp_path):
    proxy = proxy_factory(small_prometheus.url, token="s3cr3t-token")
    token = tmp_path / "token"
    token.write_text("s3cr3t-token\n")  # mounted service-account tokens may end with a newline

    result = prom.fetch(cli.settings_from_args(small_args(proxy.url, "--bearer-token-file", str(token))))
    assert result.sample_count > 0 and all(status == 200 for _, status in proxy.requests)

    with pytest.raises(PrometheusQueryError, match="HTTP 401") as exc:
        prom.fetch(cli.settings_from_args(small_args(proxy.url)))
    assert "s3cr3t" not in one_line(exc) and exc.value.exit_code == 9

    token.write_text("wrong")
    with pytest.raises(PrometheusQueryError, match="HTTP 401"):
        prom.fetch(cli.settings_from_args(small_args(proxy.url, "--bearer-token-file", str(token))))
    with pytest.raises(InputError, match="cannot read bearer token file"):
        prom.fetch(cli.settings_from_args(small_args(proxy.url, "--bearer-token-file", str(tmp_path / "none"))))


def test_tls_is_verified_against_a_ca_bundle_unless_told_otherwise(prometheus_factory):
    handle = prometheus_factory(openmetrics=SMALL, tls=True)
    assert handle.url.startswith("https://")
    with pytest.raises(PrometheusUnreachableError, match="certificate verify failed"):
        prom.fetch(cli.settings_from_args(small_args(handle.url, "--retries", "0")))
    for extra in (["--ca-file", str(handle.ca_file)], ["--insecure-skip-tls-verify"]):
        settings = cli.settings_from_args(small_args(handle.url, *extra))
        assert_matches_backfill(prom.fetch(settings), SMALL.series(), SMALL.start, SMALL.end, SMALL.step)


def test_a_query_prometheus_rejects_is_a_query_error(small_prometheus):
    with pytest.raises(PrometheusQueryError, match="HTTP 400") as exc:
        prom.fetch(cli.settings_from_args(small_args(small_prometheus.url, "--label-filter", "instance=~(")))
    assert "missing closing )" in one_line(exc)


def test_no_metric_with_the_prefix(small_prometheus):
    with pytest.raises(NoKeplerMetricsError, match="no metric named nothing_\\*") as exc:
        prom.fetch(cli.settings_from_args(small_args(small_prometheus.url, "--metric-prefix", "nothing_")))
    assert exc.value.exit_code == 4


def test_a_window_before_the_data_has_no_metrics(small_prometheus):
    args = window_args(small_prometheus.url, SMALL.start - 86400, SMALL.start - 86400 + 600)
    with pytest.raises(NoKeplerMetricsError):
        prom.fetch(cli.settings_from_args(args))


def test_a_window_of_one_point_is_too_few_samples(small_prometheus):
    args = window_args(small_prometheus.url, SMALL.start + 30, SMALL.start + 31)
    with pytest.raises(TooFewSamplesError, match="1 point") as exc:
        prom.fetch(cli.settings_from_args(args))
    assert exc.value.exit_code == 6


def test_third_party_metrics_are_fetched_by_name(small_prometheus):
    settings = cli.settings_from_args(small_args(small_prometheus.url, "--metric-prefix", "kepler_node_",
                                                  "-tm", "kepler_container_cpu_instructions_total,up"))
    names = set(prom.fetch(settings).metrics)
    assert "kepler_container_cpu_instructions_total" in names
    assert {n for n in names if n.startswith("kepler_container_")} == {"kepler_container_cpu_instructions_total"}
    assert all(n.startswith("kepler_node_") for n in names - {"kepler_container_cpu_instructions_total"})


def test_nothing_is_written_when_the_query_fails(tmp_path):
    previous = tmp_path / "output.json"
    previous.write_text('{"kept": []}')
    args = small_args(f"http://127.0.0.1:{free_port()}", "--retries", "0")
    with pytest.raises(PrometheusUnreachableError):
        cli.run_query(args, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["output.json"]
    assert previous.read_text() == '{"kept": []}'
