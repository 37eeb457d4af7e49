"""`kepler-model exporter` end to end: node-exporter preset models trained from a dump derived from a real
Kepler dump (tests/support/vmdata.py), the exporter run as a real process on a fake procfs whose counters
advance along that dump's samples (tests/support/fakeprocfs.py), scraped over HTTP.

Checked: the inputs are node-exporter's definitions on the files, computed as the manifest says; the power
is onnxruntime's answer for those inputs; the joules counter integrates it over the procfs clock; a counter
reset and a missing field are counted gaps; a reload under scrape load never fails a scrape nor mixes two
models; a bad new model is refused and the last good one kept; a model whose inputs procfs cannot give is
refused at start (exit 7); the process never imports the trainer's scientific stack; history inputs are the
statistics of the exporter's own past inputs, started afresh by a gap."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from kepler_trainer import promjson
from kepler_trainer.data import QueryResult, Series
from kepler_trainer.onnx_export import predict, session
from tests.support.checkout import subprocess_env
from tests.support.fakeprocfs import ProcfsTree, samples_from
from tests.support.vmdata import derive, measuring_node

ENV = subprocess_env()
GROUP = "node-exporter"
ROWS = 25  # evaluations checked one by one


@pytest.fixture(scope="module")
def derived():
    return derive()


def _train(derived, tmp: Path, trainers: str, *extra: str) -> Path:
    """The AbsPower feature-group folder of a node-exporter preset pipeline trained from a dump."""
    result = QueryResult()
    for s in derived.series + measuring_node(derived):
        result.metrics.setdefault(s.name, []).append(Series(s.labels, s.timestamps.astype(float), s.values))
    dump = promjson.dump(result, tmp / "dump.json")
    proc = subprocess.run([sys.executable, "-m", "kepler_trainer", "train", "-i", str(dump), "--features", GROUP,
                           "-p", "ne", "--abs-trainers", trainers, "--dyn-trainers", "LinearRegression",
                           "--model-path", str(tmp / "models"), *extra],
                          env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return tmp / "models" / "ne" / "rapl-sysfs" / "AbsPower" / GROUP


@pytest.fixture(scope="module")
def models(derived, tmp_path_factory) -> dict[str, Path]:
    """Trainer -> the published model folder of a node-exporter preset pipeline trained from a dump."""
    base = _train(derived, tmp_path_factory.mktemp("exporter-models"), "LinearRegression,GradientBoostingRegressor")
    return {t: base / f"{t}Trainer_0" for t in ("LinearRegression", "GradientBoostingRegressor")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Exporter:
    def __init__(self, model: Path | str, procfs: Path, tmp: Path, interval: str = "0.1s", *extra: str):
        self.port = _free_port()
        self.log = tmp / f"exporter-{self.port}.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "kepler_trainer", "exporter", "--model", str(model),
                                      "--procfs", str(procfs), "--interval", interval, "--port", str(self.port),
                                      "--address", "127.0.0.1", *extra],
                                     env=ENV, stdout=subprocess.DEVNULL, stderr=self.log.open("w"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                self.get("/healthz")
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError("the exporter did not start")

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as answer:
                return answer.status, answer.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def scrape(self) -> dict[str, list]:
        status, text = self.get("/metrics")
        assert status == 200
        out: dict[str, list] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out.setdefault(sample.name, []).append((sample.labels, sample.value))
        return out

    def wait_for(self, evaluations: int, timeout: float = 20.0) -> dict[str, list]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            metrics = self.scrape()
            if metrics["kepler_model_exporter_evaluations_total"][0][1] >= evaluations:
                return metrics
            time.sleep(0.02)
        raise AssertionError(f"no evaluation {evaluations}: {self.log.read_text()[-2000:]}")

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=20)


def _one(metrics: dict, name: str, **labels) -> float:
    found = [v for lab, v in metrics.get(name, []) if all(lab.get(k) == w for k, w in labels.items())]
    assert len(found) == 1, (name, labels, metrics.get(name))
    return found[0]


def _wait_for_gap(exporter: Exporter, reason: str) -> None:
    deadline = time.monotonic() + 20
    while _one(exporter.scrape(), "kepler_model_exporter_gaps_total", reason=reason) < 1:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _reset_a_counter(exporter: Exporter, tree: ProcfsTree, sample) -> None:
    """Write `sample` with its context switches gone back (a counted `counter_reset` gap) and wait for the gap."""
    sample.ctxt = 5
    tree.write(sample)
    _wait_for_gap(exporter, "counter_reset")


def _expected_inputs(manifest: dict, before, after) -> np.ndarray:
    """node-exporter's definitions on the two samples, then the manifest's rate and scale (by hand)."""
    dt = after.uptime - before.uptime
    values = []
    for item in manifest["inputs"]:
        name = item["name"]
        if name.startswith("cpu_"):
            mode = name.removeprefix("cpu_")
            seconds = [sum(s.ticks[c].get(mode, 0) for c in s.ticks) / 100 for s in (before, after)]
            value = (seconds[1] - seconds[0]) / dt
        elif name == "context_switches":
            value = (after.ctxt - before.ctxt) / dt
        elif name == "interrupts":
            value = (after.intr - before.intr) / dt
        else:
            assert name == "memory_active" and item["kind"] == "gauge"
            value = after.meminfo_kb["Active"] * 1024.0
        values.append(value * item["scale"])
    return np.array(values)


def test_exported_power_is_the_models_prediction_and_joules_integrate_it(models, derived, tmp_path):
    folder = models["LinearRegression"]
    manifest = json.loads((folder / "onnx_manifest.json").read_text())
    graph = session((folder / "model.onnx").read_bytes())
    samples = samples_from(derived)
    tree = ProcfsTree(tmp_path / "proc")
    tree.write(samples[0])
    exporter = Exporter(folder, tree.root, tmp_path)
    try:
        joules = dict.fromkeys([o["name"] for o in manifest["outputs"]], 0.0)
        assert exporter.get("/readyz")[0] == 503  # nothing estimated yet
        for k in range(1, ROWS + 1):
            tree.write(samples[k])
            metrics = exporter.wait_for(k)
            x = _expected_inputs(manifest, samples[k - 1], samples[k])
            got = np.array([_one(metrics, "kepler_model_exporter_input", input=i["name"]) for i in manifest["inputs"]])
            np.testing.assert_allclose(got, x, rtol=1e-9, atol=1e-12)
            want = predict(graph, x.reshape(1, -1))
            for zone, watts in want.items():
                exported = _one(metrics, "kepler_model_estimated_watts", pipeline="ne", zone=zone,
                                model="LinearRegressionTrainer_0")
                assert exported == pytest.approx(watts[0], rel=1e-9, abs=1e-9) and exported >= 0
                joules[zone] += watts[0] * (samples[k].uptime - samples[k - 1].uptime)
                assert _one(metrics, "kepler_model_estimated_joules_total", zone=zone) == pytest.approx(
                    joules[zone], rel=1e-9, abs=1e-9)
        assert exporter.get("/readyz")[0] == 200
        # the inputs are the training rows' features, up to the kernel's tick rounding
        import pandas as pd

        table = pd.read_csv(folder.parents[3] / "preprocessed_data" / f"{GROUP}_abs_data.csv")
        row = table[table["timestamp"] == float(derived.timestamps[ROWS])].iloc[0]
        assert np.allclose(got, row[[i["name"] for i in manifest["inputs"]]].to_numpy(float), rtol=1e-3, atol=0.02)

        # a counter going back: a counted gap, no power for it, the joules untouched; then on again
        _reset_a_counter(exporter, tree, samples[ROWS + 1])
        # a missing field (no meminfo: the memory input): counted, the process lives on
        tree.write(samples[ROWS + 2])
        os.unlink(tree.root / "meminfo")
        _wait_for_gap(exporter, "missing_field")
        metrics = exporter.scrape()
        assert _one(metrics, "kepler_model_exporter_evaluations_total") == ROWS
        for zone, total in joules.items():
            assert _one(metrics, "kepler_model_estimated_joules_total", zone=zone) == pytest.approx(total, rel=1e-9,
                                                                                                     abs=1e-9)
        tree.write(samples[ROWS + 3])
        tree.write(samples[ROWS + 4])
        exporter.wait_for(ROWS + 1)
    finally:
        assert exporter.stop() == 0
    log = exporter.log.read_text()
    assert "gap (counter_reset)" in log and "gap (missing_field)" in log and "Traceback" not in log


def _configmap(folder: Path, version: str, source: Path) -> None:
    """A ConfigMap volume as the kubelet writes it: files behind `..data`, swapped with one rename."""
    target = folder / f"..{version}"
    target.mkdir()
    for name in ("onnx_manifest.json", "model.onnx"):
        shutil.copyfile(source / name, target / name)
        if not (folder / name).is_symlink():
            os.symlink(f"..data/{name}", folder / name)
    os.symlink(target.name, folder / "..data_tmp")
    os.replace(folder / "..data_tmp", folder / "..data")


def test_reload_under_scrape_load_never_fails_nor_mixes_models(models, derived, tmp_path):
    linear, boosted = models["LinearRegression"], models["GradientBoostingRegressor"]
    shas = {json.loads((m / "onnx_manifest.json").read_text())["check"]["sha256"]: m.name for m in (linear, boosted)}
    cm = tmp_path / "cm"
    cm.mkdir()
    _configmap(cm, "v1", linear)
    samples = samples_from(derived)
    tree = ProcfsTree(tmp_path / "proc")
    tree.write(samples[0])
    exporter = Exporter(cm, tree.root, tmp_path, "0.05s", "--pipeline", "ne")
    stop, problems, seen, scrapes = threading.Event(), [], set(), [0]

    def scraper():
        while not stop.is_set():
            try:
                metrics = exporter.scrape()
            except Exception as exc:  # any failed scrape is the finding
                problems.append(repr(exc))
                continue
            scrapes[0] += 1
            info = metrics["kepler_model_exporter_model_info"][0][0]
            models_named = {lab["model"] for name in ("kepler_model_estimated_watts",
                                                      "kepler_model_estimated_joules_total")
                            for lab, _ in metrics.get(name, [])}
            if models_named - {info["model"]} or shas[info["sha256"]] != info["model"]:
                problems.append(f"mixed: {models_named} beside {info}")
            seen.add(info["model"])

    threads = [threading.Thread(target=scraper) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        for k in range(1, 80):
            tree.write(samples[k])
            time.sleep(0.03)
            if k % 20 == 0:  # swap the model back and forth, as a ConfigMap update does
                _configmap(cm, f"v{k}", boosted if (k // 20) % 2 else linear)
            if k == 70:  # a graph and a manifest of two publications: refused, the last good model kept
                bad = tmp_path / "bad"
                bad.mkdir()
                shutil.copyfile(linear / "onnx_manifest.json", bad / "onnx_manifest.json")
                shutil.copyfile(boosted / "model.onnx", bad / "model.onnx")
                _configmap(cm, "bad", bad)
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
    metrics = exporter.scrape()
    assert exporter.stop() == 0
    assert problems == [] and scrapes[0] > 20
    assert seen == {"LinearRegressionTrainer_0", "GradientBoostingRegressorTrainer_0"}
    assert _one(metrics, "kepler_model_exporter_reload_failures_total") == 1
    assert _one(metrics, "kepler_model_exporter_model_info")  # still serving the model before the bad one
    assert metrics["kepler_model_exporter_model_info"][0][0]["model"] == "GradientBoostingRegressorTrainer_0"
    log = exporter.log.read_text()
    assert "model reload refused, keeping ne/GradientBoostingRegressorTrainer_0" in log and "SHA-256" in log


def test_a_model_whose_inputs_procfs_cannot_give_is_refused_at_start(models, derived, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(models["LinearRegression"], folder)
    manifest = json.loads((folder / "onnx_manifest.json").read_text())
    manifest["inputs"][0]["promql"] = 'node_hwmon_temp_celsius{chip="x"}'
    (folder / "onnx_manifest.json").write_text(json.dumps(manifest))
    tree = ProcfsTree(tmp_path / "proc")
    tree.write(samples_from(derived)[0])
    proc = subprocess.run([sys.executable, "-m", "kepler_trainer", "exporter", "--model", str(folder), "--procfs",
                           str(tree.root), "--port", str(_free_port())], env=ENV, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 7
    assert proc.stderr.strip().splitlines() == [
        f"kepler-model: error: model input {manifest['inputs'][0]['name']!r} (node_hwmon_temp_celsius{{chip=\"x\"}}) "
        "cannot be provided here: no such node-exporter series in the procfs (this exporter reads /proc/stat, "
        "/proc/meminfo, /proc/loadavg)"]


LIGHT_CHECK = """
import os, sys, threading, time, urllib.request
from kepler_trainer.cli import main

def check():
    text = ""
    for _ in range(600):
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[-1]}/metrics", timeout=5).read().decode()
            if "kepler_model_estimated_watts{" in text:
                break
        except OSError:
            pass
        time.sleep(0.1)
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("pandas", "sklearn", "xgboost", "scipy", "skops",
                                                                  "pydantic", "onnx", "skl2onnx", "fastapi"))
    print("estimated" if "kepler_model_estimated_watts{" in text else "none", "heavy:", ",".join(heavy), flush=True)
    os._exit(0)

threading.Thread(target=check, daemon=True).start()
main(sys.argv[1:])
"""


def test_the_exporter_imports_nothing_of_the_trainers_stack(models, derived, tmp_path):
    tree = ProcfsTree(tmp_path / "proc")
    samples = samples_from(derived)
    tree.write(samples[0])
    writer = threading.Timer(3.0, tree.write, (samples[1],))
    writer.start()
    proc = subprocess.run([sys.executable, "-c", LIGHT_CHECK, "exporter", "--model", str(models["LinearRegression"]),
                           "--procfs", str(tree.root), "--interval", "0.2s", "--address", "127.0.0.1", "--port",
                           str(_free_port())], env=ENV, capture_output=True, text=True, timeout=120)
    writer.join()
    assert proc.stdout.strip() == "estimated heavy:", proc.stdout + proc.stderr[-2000:]


def test_model_from_the_model_servers_onnx_url(models, derived, tmp_path):
    """The real model server serves the folder's manifest and graph; the pipeline label comes from the URL."""
    port = _free_port()
    models_dir = models["LinearRegression"].parents[4]
    server = subprocess.Popen([sys.executable, "-m", "kepler_trainer", "serve", "--models-dir", str(models_dir),
                               "--host", "127.0.0.1", "--port", str(port)], env=ENV, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/onnx/" + "/".join(models["LinearRegression"].relative_to(models_dir).parts)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "/manifest", timeout=5).read()
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "the model server did not start"
                time.sleep(0.2)
        samples = samples_from(derived)
        tree = ProcfsTree(tmp_path / "proc")
        tree.write(samples[0])
        exporter = Exporter(url, tree.root, tmp_path)
        try:
            tree.write(samples[1])
            metrics = exporter.wait_for(1)
        finally:
            assert exporter.stop() == 0
        graph = session((models["LinearRegression"] / "model.onnx").read_bytes())
        manifest = json.loads((models["LinearRegression"] / "onnx_manifest.json").read_text())
        want = predict(graph, _expected_inputs(manifest, samples[0], samples[1]).reshape(1, -1))
        assert _one(metrics, "kepler_model_estimated_watts", pipeline="ne", zone="package") == pytest.approx(
            want["package"][0], rel=1e-9)
    finally:
        server.terminate()
        server.wait(timeout=20)


def test_history_inputs_are_the_past_samples_statistics_and_a_gap_starts_them_afresh(derived, tmp_path):
    """A model trained with `--history 15,60`: the exporter keeps its own past inputs and feeds the graph the
    mean and the largest busy CPU time over the last 15 and 60 s of its clock, as training computed them."""
    folder = _train(derived, tmp_path, "GradientBoostingRegressor", "--history", "15,60") / \
        "GradientBoostingRegressorTrainer_0"
    manifest = json.loads((folder / "onnx_manifest.json").read_text())
    plain = [i for i in manifest["inputs"] if "history" not in i]
    past = manifest["inputs"][len(plain):]
    assert [i["name"] for i in past] == ["busy_cpu_mean_15s", "busy_cpu_max_15s", "busy_cpu_mean_60s",
                                         "busy_cpu_max_60s"] and manifest["check"]["exportable"]
    busy = [k for k, i in enumerate(plain) if i["name"] in past[0]["history"]["of"]]
    graph = session((folder / "model.onnx").read_bytes())
    samples = samples_from(derived)
    tree = ProcfsTree(tmp_path / "proc")
    tree.write(samples[0])
    exporter = Exporter(folder, tree.root, tmp_path)
    seen: list[tuple[float, float]] = []  # (uptime, busy CPU time) of every evaluation since the last gap

    def check(k: int, evaluations: int) -> None:
        tree.write(samples[k])
        metrics = exporter.wait_for(evaluations)
        x = _expected_inputs({"inputs": plain}, samples[k - 1], samples[k])
        seen.append((samples[k].uptime, float(sum(x[busy]))))
        now = samples[k].uptime
        want = []
        for item in past:
            window = [b for t, b in seen if now - item["history"]["window_seconds"] < t <= now]
            want.append(np.mean(window) if item["history"]["stat"] == "mean" else max(window))
        full = np.concatenate([x, want])
        got = np.array([_one(metrics, "kepler_model_exporter_input", input=i["name"]) for i in manifest["inputs"]])
        np.testing.assert_allclose(got, full, rtol=1e-9, atol=1e-12)
        for zone, watts in predict(graph, full.reshape(1, -1)).items():
            assert _one(metrics, "kepler_model_estimated_watts", zone=zone) == pytest.approx(watts[0], rel=1e-9,
                                                                                             abs=1e-9)

    try:
        for k in range(1, ROWS + 1):
            check(k, k)
        _reset_a_counter(exporter, tree, samples[ROWS + 1])
        seen.clear()  # the gap: the next evaluations' history holds only what came after it
        check(ROWS + 2, ROWS + 1)
        check(ROWS + 3, ROWS + 2)
    finally:
        assert exporter.stop() == 0
