"""`train --features node-exporter -i DUMP` with a `kepler_platform_watts` gauge: two energy sources from one
feature set, the gauge read as watts (not as a counter), ONNX for both, served by the model server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from kepler_trainer import promjson
from kepler_trainer.data import QueryResult, Series
from tests.support.checkout import subprocess_env
from tests.support.vmdata import HOST, derive, measuring_node

PLATFORM_EXTRA = 60.0  # watts the rest of the machine draws beside package and dram


def test_platform_gauge_and_rapl_zones_from_one_dump(tmp_path):
    derived = derive()
    result = QueryResult()
    for s in derived.series + measuring_node(derived):
        result.metrics.setdefault(s.name, []).append(Series(s.labels, s.timestamps.astype(float), s.values))
    platform = derived.power["package"] + derived.power["dram"] + PLATFORM_EXTRA
    result.metrics["kepler_platform_watts"] = [Series({"instance": f"{HOST}:28282"}, derived.timestamps.astype(float),
                                                      platform)]
    dump = promjson.dump(result, tmp_path / "dump.json")
    env = subprocess_env()
    proc = subprocess.run([sys.executable, "-m", "kepler_trainer", "train", "-i", str(dump), "--features",
                           "node-exporter", "-p", "ne", "--abs-trainers", "LinearRegression", "--dyn-trainers",
                           "LinearRegression", "--model-path", str(tmp_path / "models")],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pipeline = tmp_path / "models" / "ne"
    rows = pd.read_csv(pipeline / "preprocessed_data" / "node-exporter_abs_data.csv").dropna(subset=["platform_power"])
    # the gauge is taken as it is (watts) at its own timestamp, not differentiated like the counters
    measured = dict(zip(derived.timestamps.astype(float), platform, strict=False))
    assert len(rows) > 100
    assert np.allclose(rows["platform_power"], [measured[t] for t in rows["timestamp"]])
    for source, zones in (("platform", ["platform"]), ("rapl-sysfs", ["package", "core", "uncore", "dram"])):
        manifest = json.loads((pipeline / source / "AbsPower" / "node-exporter" / "LinearRegressionTrainer_0"
                               / "onnx_manifest.json").read_text())
        assert [o["name"] for o in manifest["outputs"]] == zones and manifest["check"]["exportable"]

    from fastapi.testclient import TestClient

    from kepler_model_server.app import create_app

    with TestClient(create_app(tmp_path / "models")) as client:
        assert client.get("/pipelines").json()["pipelines"][0]["sources"] == ["platform", "rapl-sysfs"]
        folder = "ne/platform/AbsPower/node-exporter/LinearRegressionTrainer_0"
        answer = client.get(f"/onnx/{folder}/model.onnx")
        assert answer.status_code == 200
        assert answer.content == (tmp_path / "models" / folder / "model.onnx").read_bytes()


def _train_features(dump: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = subprocess_env()
    return subprocess.run([sys.executable, "-m", "kepler_trainer", "train", "-i", str(dump), "--features",
                           "node-exporter", "-p", "ne", "--abs-trainers", "LinearRegression", "--dyn-trainers",
                           "LinearRegression", "--model-path", str(tmp_path / "models"),
                           "--termination-log", str(tmp_path / "summary.json")],
                          env=env, capture_output=True, text=True, timeout=600)


def test_feature_set_inputs_get_the_same_sample_checks(tmp_path):
    """One +Inf in a node-exporter counter is a dropped, counted sample (not a counter reset that
    poisons every rate), and millisecond timestamps are refused: the checks of Kepler 0.7's inputs."""
    derived = derive()
    result = QueryResult()
    poisoned = 0
    for s in derived.series + measuring_node(derived):
        values = s.values.astype(float).copy()
        if s.name == "node_intr_total" and not poisoned:
            values[len(values) // 2], poisoned = np.inf, 1
        result.metrics.setdefault(s.name, []).append(Series(s.labels, s.timestamps.astype(float), values))
    proc = _train_features(promjson.dump(result, tmp_path / "inf.json"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    checks = json.loads((tmp_path / "summary.json").read_text())["input_checks"]
    assert checks["non_finite"] == 1 and checks["dropped"] == 1
    assert json.loads((tmp_path / "models" / "ne" / "metadata.json").read_text())["input_checks"] == checks

    for series_list in result.metrics.values():
        for i, s in enumerate(series_list):
            series_list[i] = Series(s.labels, s.timestamps * 1000, np.nan_to_num(s.values, posinf=0.0))
    proc = _train_features(promjson.dump(result, tmp_path / "ms.json"), tmp_path)
    assert proc.returncode == 3 and "millisecond" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_several_machines_train_with_each_machines_runs_held_out(tmp_path):
    """A dump of two measuring nodes (the same series under a second host, its values scaled) trains: each
    machine's rows keep their own time order, so the runs held out are found per machine (5 blocks each),
    not across the concatenated table (which is not in time order and used to end in a traceback)."""
    derived = derive()
    result = QueryResult()
    for s in derived.series + measuring_node(derived):
        result.metrics.setdefault(s.name, []).append(Series(s.labels, s.timestamps.astype(float), s.values))
        instance = s.labels.get("instance", "")
        if instance.startswith(HOST):
            second = {**s.labels, "instance": instance.replace(HOST, "second-host", 1)}
            result.metrics[s.name].append(Series(second, s.timestamps.astype(float), s.values * 1.1))
    proc = _train_features(promjson.dump(result, tmp_path / "two.json"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pipeline = tmp_path / "models" / "ne"
    rows = pd.read_csv(pipeline / "preprocessed_data" / "node-exporter_abs_data.csv")
    assert rows["instance"].nunique() == 2
    evaluation = json.loads((pipeline / "rapl-sysfs" / "AbsPower" / "node-exporter" / "LinearRegressionTrainer_0"
                             / "metadata.json").read_text())["evaluation"]
    assert evaluation["split"] == "workload" and evaluation["folds"] == 10
    assert evaluation["test_rows"] == len(rows)  # every row held out once, in its own machine's run
