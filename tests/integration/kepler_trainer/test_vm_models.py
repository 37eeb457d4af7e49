"""Feature-set training end to end: a real Prometheus backfilled with node-exporter- and Kepler-0.10-shaped
series derived from a real dump (tests/support/vmdata.py), each preset trained through the CLI, the ONNX
graphs checked against the native models, and the model server serving them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kepler_trainer import featuresets
from kepler_trainer.onnx_export import predict, session
from kepler_trainer.persist import LoadedModel
from tests.support.checkout import subprocess_env
from tests.support.prometheus import require_binaries
from tests.support.vmdata import GUEST, VM_ID, derive, measuring_node

pytestmark = [pytest.mark.prometheus, pytest.mark.slow]


def _cli(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = subprocess_env()
    return subprocess.run([sys.executable, "-m", "kepler_trainer", *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def derived():
    return derive()


@pytest.fixture(scope="module")
def prometheus(derived, tmp_path_factory):
    require_binaries()
    from tests.support.prometheus import start_prometheus
    from tests.support.vmdata import Derived

    # the guest's series, and the same again as the measuring node's own node-exporter
    both = Derived(derived.timestamps, derived.busy, derived.power, derived.series + measuring_node(derived))
    handle = start_prometheus(tmp_path_factory.mktemp("vmprom"), openmetrics=both.openmetrics())
    yield handle
    handle.stop()


def _window(derived) -> list[str]:
    return ["--start-time", str(int(derived.timestamps[0])), "--end-time", str(int(derived.timestamps[-1])),
            "--step", "3"]


def _model_dirs(pipeline: Path) -> list[Path]:
    return sorted(p.parent for p in pipeline.glob("*/*/*/*/onnx_manifest.json"))


def _check_onnx_equals_native(pipeline: Path) -> int:
    """Every exported graph predicts what the native model predicts on the published training rows."""
    checked = 0
    for folder in _model_dirs(pipeline):
        manifest = json.loads((folder / "onnx_manifest.json").read_text())
        if not manifest["check"]["exportable"]:
            assert manifest["check"]["reason"] and not (folder / "model.onnx").exists()
            continue
        source, output_type, group = folder.relative_to(pipeline).parts[:3]
        kind = "abs" if output_type == "AbsPower" else "dyn"
        import pandas as pd

        rows = pd.read_csv(pipeline / "preprocessed_data" / f"{group}_{kind}_data.csv")
        names = [i["name"] for i in manifest["inputs"]]
        x = rows[names].to_numpy(float)
        native = LoadedModel(folder).predict(x)
        exported = predict(session((folder / "model.onnx").read_bytes()), x)
        for zone, want in native.items():
            got = exported[zone]
            assert np.all(np.abs(got - want) <= 1e-5 * np.maximum(np.abs(want), 1e-3)), (folder, zone)
        checked += 1
    return checked


@pytest.mark.parametrize("preset,extra", [
    ("kepler-vm", ["--join-map", f"{GUEST}={VM_ID}"]),
    ("node-exporter", []),
])
def test_train_preset_from_prometheus(prometheus, derived, tmp_path, preset, extra):
    proc = _cli("train", "-s", prometheus.url, *_window(derived), "--features", preset, *extra, "-p", preset,
                "--abs-trainers", "LinearRegression,GradientBoostingRegressor,XgboostFit",
                "--dyn-trainers", "LinearRegression", "--model-path", str(tmp_path / "models"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    pipeline = tmp_path / "models" / preset
    meta = json.loads((pipeline / "rapl-sysfs" / "AbsPower" / preset / "LinearRegressionTrainer_0"
                       / "metadata.json").read_text())
    # held out by workload (the default for feature sets), figures per zone, idle bias on idle rows
    assert meta["evaluation"]["split"] == "workload" and meta["evaluation"]["folds"] >= 2
    assert meta["features"] == sorted(featuresets.PRESETS[preset].features)
    for zone in ("package", "dram"):
        assert meta[f"{zone}_mae"] >= 0 and meta[f"{zone}_idle_bias"] is not None
    manifest = json.loads((pipeline / "rapl-sysfs" / "AbsPower" / preset / "LinearRegressionTrainer_0"
                           / "onnx_manifest.json").read_text())
    assert manifest["check"]["exportable"], manifest["check"]
    assert [i["name"] for i in manifest["inputs"]] == meta["features"]
    assert manifest["inputs"][0]["promql"].startswith("node_")
    assert [o["name"] for o in manifest["outputs"]] == ["package", "core", "uncore", "dram"]
    assert _check_onnx_equals_native(pipeline) >= 3
    # the measured package power follows the real load: a linear model on CPU time beats the mean
    assert meta["package_mae"] < np.mean(np.abs(derived.power["package"] - derived.power["package"].mean()))


def test_train_from_dump_equals_from_prometheus(prometheus, derived, tmp_path):
    """`-i` a query dump (node-exporter metrics fetched as third-party metrics) trains the same table."""
    dump = tmp_path / "dump.json"
    proc = _cli("query", "-s", prometheus.url, *_window(derived), "-tm", "node_cpu_seconds_total",
                "node_context_switches_total", "node_intr_total", "node_memory_Active_bytes", "-o", str(dump),
                cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for source, args in (("dump", ["-i", str(dump)]), ("prom", ["-s", prometheus.url, *_window(derived)])):
        proc = _cli("train", *args, "--features", "node-exporter", "-p", source, "--abs-trainers", "LinearRegression",
                    "--dyn-trainers", "LinearRegression", "--no-onnx", "--model-path", str(tmp_path / "m"),
                    cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-2000:]
    tables = [(tmp_path / "m" / s / "preprocessed_data" / "node-exporter_abs_data.csv").read_text()
              for s in ("dump", "prom")]
    assert tables[0] == tables[1]
    assert not list((tmp_path / "m" / "dump").glob("*/*/*/*/model.onnx"))


def test_bad_feature_set_is_one_message(tmp_path):
    bad = tmp_path / "set.yaml"
    bad.write_text("name: x\nfeatures: {a: {query: 'rate(node_cpu_seconds_total[1m])', unit: s}}\n"
                   "targets: {package: {query: kepler_vm_cpu_joules_total, unit: W}}\n")
    proc = _cli("train", "-i", "nothing.json", "--features", str(bad), cwd=tmp_path)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "not a PromQL series selector" in proc.stderr
    proc = _cli("train", "-s", "http://127.0.0.1:9", "--start-time", "0", "--end-time", "60", "--features",
                "kepler-vm", "--label-filter", "job=node", cwd=tmp_path)
    assert proc.returncode == 7 and "do not apply to --features" in proc.stderr
    for history, message in (("15,15", "distinct lengths between 5 and 3600 seconds"), ("15,x", "whole seconds")):
        proc = _cli("train", "-i", "nothing.json", "--features", "kepler-vm", "--history", history, cwd=tmp_path)
        assert proc.returncode == 7 and message in proc.stderr and "Traceback" not in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1


def test_model_server_serves_onnx(prometheus, derived, tmp_path):
    from fastapi.testclient import TestClient

    from kepler_model_server.app import create_app

    proc = _cli("train", "-s", prometheus.url, *_window(derived), "--features", "kepler-vm", "--join-map",
                f"{GUEST}={VM_ID}", "-p", "vm", "--abs-trainers", "LinearRegression", "--dyn-trainers",
                "LinearRegression", "--model-path", str(tmp_path / "models"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    base = "/onnx/vm/rapl-sysfs/AbsPower/kepler-vm/LinearRegressionTrainer_0"
    with TestClient(create_app(tmp_path / "models")) as client:
        manifest = client.get(f"{base}/manifest")
        assert manifest.status_code == 200 and manifest.json()["check"]["exportable"]
        graph = client.get(f"{base}/model.onnx")
        assert graph.status_code == 200 and graph.headers["content-type"] == "application/octet-stream"
        assert graph.content == (tmp_path / "models" / base.removeprefix("/onnx/") / "model.onnx").read_bytes()
        assert client.get("/onnx/vm/rapl-sysfs/AbsPower/kepler-vm/..%2F..%2Fx/manifest").status_code in (400, 404)
        assert client.get(f"{base.replace('LinearRegressionTrainer_0', 'Nope_0')}/manifest").status_code == 404
        paths = client.get("/openapi.json").json()["paths"]
        assert "/onnx/{pipeline}/{source}/{output_type}/{group}/{model}/{which}" in paths
