"""Live scraping: a prometheus_client exporter with Kepler-style counters, scraped every second."""

from __future__ import annotations

import time

import numpy as np
import pytest

from kepler_trainer import cli, prom
from tests.support.prometheus import parse_query_args, wait_scraped

pytestmark = pytest.mark.prometheus


def test_live_counters_come_back_as_scraped(session_prometheus):
    env, exporter = session_prometheus, session_prometheus.exporter
    for _ in range(4):
        exporter.tick()
        time.sleep(1.0)
    ticks = exporter.ticks
    time.sleep(2.5)  # at least two scrapes after the last tick
    wait_scraped(env.handle, "kepler-live", samples=4)

    settings = cli.settings_from_args(parse_query_args("-s", env.url, "--interval", "1m", "--step", "1",
                                                        "--label-filter", "job=kepler-live"))
    result = prom.fetch(settings)

    step = exporter.INCREMENTS["bpf_cpu_time_ms"]
    wanted = {"kepler_container_bpf_cpu_time_ms_total", "kepler_container_cpu_instructions_total",
              "kepler_container_cpu_cycles_total", "kepler_node_package_joules_total"}
    assert wanted <= set(result.metrics)
    cpu = result.get("kepler_container_bpf_cpu_time_ms_total")
    assert sorted(s.labels["container_name"] for s in cpu) == sorted(exporter.containers)
    for series in cpu:
        # honor_labels: the exporter's instance label wins over the scrape address
        assert series.labels["instance"] == exporter.instance and series.labels["job"] == "kepler-live"
        assert len(series) >= 4 and np.all(np.diff(series.timestamps) == 1.0)
        assert np.all(np.diff(series.values) >= 0)
        assert np.all(series.values % step == 0) and series.values.min() >= step
        assert series.values[-1] == step * ticks  # the value after the last tick was scraped
    package = result.get("kepler_node_package_joules_total")[0]
    assert package.values[-1] == pytest.approx(exporter.PACKAGE_JOULES_PER_TICK * ticks)


def test_an_exporter_is_not_a_prometheus(session_prometheus):
    """-s pointed at Kepler's own /metrics port: 200 answers that are not the Prometheus API."""
    from kepler_trainer.errors import PrometheusQueryError

    url = f"http://{session_prometheus.exporter.address}"
    with pytest.raises(PrometheusQueryError, match="did not answer like Prometheus"):
        prom.fetch(cli.settings_from_args(parse_query_args("-s", url, "--interval", "1m")))
