"""Feature sets: selector parsing and matching, validation, presets, the join, rates with counter resets."""

from __future__ import annotations

import numpy as np
import pytest

from kepler_trainer import featuresets
from kepler_trainer.data import QueryResult, Series
from kepler_trainer.errors import ConfigError, InputError


def test_selector_parsing_and_promql_matching():
    name, matchers = featuresets.parse_selector('node_cpu_seconds_total{mode="user", cpu=~"1|2",job!="x"}')
    assert name == "node_cpu_seconds_total"
    assert matchers == [("mode", "=", "user"), ("cpu", "=~", "1|2"), ("job", "!=", "x")]
    assert featuresets._matches({"mode": "user", "cpu": "2"}, matchers)
    assert not featuresets._matches({"mode": "user", "cpu": "12"}, matchers)  # anchored, as PromQL
    assert not featuresets._matches({"mode": "user", "cpu": "1", "job": "x"}, matchers)
    for bad in ("rate(node_cpu_seconds_total[1m])", "a{b=c}", 'a{b="c"', 'a{b=~"("}', "sum(x)"):
        with pytest.raises(ValueError):
            featuresets.parse_selector(bad)


def test_presets_are_documented_selectors_without_idle_time():
    vm = featuresets.PRESETS["kepler-vm"]
    assert vm.targets["package"].query == 'kepler_vm_cpu_joules_total{zone="package"}'
    assert 'node_cpu_seconds_total{mode="idle"}' not in {f.query for f in vm.features.values()}
    assert vm.join.target_label == "vm_id"
    node = featuresets.PRESETS["node-exporter"]
    assert node.sources() == {"rapl-sysfs": ["package", "core", "uncore", "dram"], "platform": ["platform"]}
    assert node.targets["platform"].kind == "gauge"


def test_file_validation_is_one_message(tmp_path):
    path = tmp_path / "set.yaml"
    path.write_text("name: x\nfeatures: {a: {query: up, unit: s, cpu_busy: true}}\n"
                    "targets: {gpu: {query: y, unit: W}}\n")
    with pytest.raises(ConfigError, match="target zone 'gpu'"):
        featuresets.load(str(path))
    path.write_text("name: x\nfeatures: {a: {query: up, unit: s}}\ntargets: {package: {query: y, unit: W}}\n")
    with pytest.raises(ConfigError, match="cpu_busy"):
        featuresets.load(str(path))
    path.write_text("{{{")
    with pytest.raises(InputError, match="not valid YAML"):
        featuresets.load(str(path))
    with pytest.raises(ConfigError, match="not a preset"):
        featuresets.load(str(tmp_path / "missing.yaml"))
    path.write_text("name: ok\nfeatures: {a: {query: 'c{k=\"v\"}', unit: cores, cpu_busy: true}}\n"
                    "targets: {package: {query: t, unit: W}}\njoin: {feature_label: instance, target_label: vm_id}\n")
    assert featuresets.load(str(path), {"g:9100": "vm1"}).join.mapping == {"g:9100": "vm1"}


def _series(labels, values, step=3.0):
    return Series(labels, np.arange(len(values), dtype=float) * step, np.asarray(values, dtype=float))


def test_extract_rates_sum_per_machine_join_and_reset():
    fs = featuresets.parse({"name": "t", "features": {"busy": {"query": 'cpu{mode="user"}', "unit": "cores",
                                                                "cpu_busy": True}},
                            "targets": {"package": {"query": 'j{zone="package"}', "unit": "W"}},
                            "join": {"feature_label": "instance", "target_label": "vm_id"}})
    fs = fs.model_copy(update={"join": fs.join.model_copy(update={"mapping": {"g:9100": "vm1"}})})
    result = QueryResult({
        "cpu": [_series({"instance": "g:9100", "mode": "user", "cpu": "0"}, [0, 3, 6, 9]),
                _series({"instance": "g:9100", "mode": "user", "cpu": "1"}, [0, 6, 1.5, 7.5]),  # reset at 2
                _series({"instance": "g:9100", "mode": "system", "cpu": "0"}, [0, 30, 60, 90])],
        "j": [_series({"vm_id": "vm1", "zone": "package"}, [0, 60, 120, 180]),
              _series({"vm_id": "vm2", "zone": "package"}, [0, 1, 2, 3])],
    })
    extracted = featuresets.extract(result, fs)
    table = extracted.table(["busy"], "rapl-sysfs")
    assert list(table["instance"].unique()) == ["vm1"]
    # cpu0 1 core + cpu1 2 cores, then 1 + (reset: 1.5 / 3 s) = 1.5, then 1 + 2
    assert table["busy"].tolist() == [3.0, 1.5, 3.0]
    assert table["package_power"].tolist() == [20.0, 20.0, 20.0]


def test_missing_feature_is_named():
    fs = featuresets.PRESETS["node-exporter"]
    with pytest.raises(InputError, match="no samples for"):
        featuresets.extract(QueryResult({}), fs)


def test_file_must_be_a_small_regular_file_not_a_symlink_or_fifo(tmp_path):
    import os

    good = tmp_path / "set.yaml"
    good.write_text("name: ok\nfeatures: {a: {query: up, unit: cores, cpu_busy: true}}\n"
                    "targets: {package: {query: t, unit: W}}\n")
    assert featuresets.load(str(good)).name == "ok"
    link = tmp_path / "link.yaml"
    link.symlink_to(good)
    with pytest.raises(ConfigError, match="symlinks are not followed"):
        featuresets.load(str(link))
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        featuresets.load(str(fifo))
    big = tmp_path / "big.yaml"
    big.write_text("#" * (featuresets.MAX_FILE_BYTES + 1))
    with pytest.raises(InputError, match="larger than"):
        featuresets.load(str(big))
