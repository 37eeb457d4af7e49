"""End to end: custom resources -> operator -> Jobs -> the real trainer CLI on a real Prometheus -> status.

Everything is real except the kubelet: the CRD apiserver (or $KUBECONFIG), the operator process, a
Prometheus backfilled with Kepler-shaped data whose power is an exact linear function of the
counters, and `kepler-model train|estimate` run from the Jobs' own command lines. The stand-in
kubelet (tests/support/kubelet.py) runs those commands with the PVC mounted as a local folder and
reports the pod's termination message back, as a real kubelet would.
"""

from __future__ import annotations

import json
import uuid
import zipfile
from pathlib import Path

import pytest

from tests.support.apiserver import (
    SELECTOR,
    OperatorProcess,
    Resources,
    condition,
    ensure_namespace,
    iso_utc,
    kube_api,
    phase,
    skip_reason,
)
from tests.support.kubelet import Kubelet, kepler_model_available

pytestmark = [pytest.mark.apiserver, pytest.mark.prometheus, pytest.mark.slow, pytest.mark.timeout(600)]

INSTANCE = "node-1:9102"
MAE_MAX_W = 0.1  # the data is exactly linear in the counter rates: a linear model must be this close


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    for reason in (skip_reason(), kepler_model_available()):
        if reason:
            pytest.skip(reason)
    prometheus = pytest.importorskip("tests.support.prometheus")
    openmetrics = pytest.importorskip("tests.support.openmetrics")
    prometheus.require_binaries()
    data = openmetrics.training_window(minutes=30, instance=INSTANCE)
    with prometheus.start_prometheus(tmp_path_factory.mktemp("prom"), openmetrics=data) as prom, \
            kube_api() as kube:
        kube.apply_crds()
        ns = ensure_namespace(kube, f"e2e-{uuid.uuid4().hex[:6]}")
        volume = tmp_path_factory.mktemp("pvc-models")
        # stands for kube-rbac-proxy in front of Prometheus (test_the_bearer_token_secret_reaches_prometheus)
        gateway = prometheus.GatewayProxy(prom.url, token="s3cret-token")
        # the admin's policy allows exactly these two Prometheus endpoints
        operator = OperatorProcess(kube, ns, default_pvc="models",
                                   allowed_prometheus_urls=f"{prom.url},{gateway.url}").start()
        try:
            with Kubelet(kube.client, ns, SELECTOR, volumes={"models": volume}) as kubelet:
                yield {"kube": kube, "ns": ns, "prom": prom, "data": data, "volume": volume, "kubelet": kubelet,
                       "res": Resources(kube, ns), "operator": operator, "gateway": gateway}
        finally:
            operator.close()
            gateway.stop()


def tp_spec(world, **change):
    data = world["data"]
    return {"prometheus": {"url": world["prom"].url},
            "window": {"start": iso_utc(data.start), "end": iso_utc(data.end), "stepSeconds": data.step},
            "labelFilters": {"instance": INSTANCE}, "pipelineName": "e2e_v1", "energySources": ["rapl-sysfs", "acpi"],
            "featureGroups": ["Basic"], "absTrainers": ["LinearRegressionTrainer", "SGDRegressorTrainer"],
            "dynTrainers": ["LinearRegressionTrainer"], "storage": {"subPath": "team"}, **change}


def explain(world, name: str) -> str:
    logs = "\n".join(f"--- {pod}\n{text[-3000:]}" for pod, text in world["kubelet"].logs.items() if name in pod)
    return f"trainer output:\n{logs}\noperator log:\n{world['operator'].output()[-3000:]}"


@pytest.fixture(scope="module")
def trained(world):
    """The TrainingPipeline `e2e`, once it finished (the estimation tests build on it)."""
    res = world["res"]
    res.create("TrainingPipeline", "e2e", tp_spec(world))
    try:
        done = res.wait_for("TrainingPipeline", "e2e", lambda r: phase(r) in ("Succeeded", "Failed"), timeout=300)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{explain(world, 'e2e-train')}") from exc
    assert phase(done) == "Succeeded", f"{done['status']}\n{explain(world, 'e2e-train')}"
    return done


def test_training_pipeline_reaches_succeeded_with_the_real_best_model(world, trained):
    res, volume, done = world["res"], Path(world["volume"]), trained
    status = done["status"]
    assert {c["type"]: c["status"] for c in status["conditions"]} == {
        "Ready": "True", "DataAvailable": "True", "Trained": "True", "Published": "True"}
    assert status["pipelinePath"] == "team/e2e_v1" and status["archive"] == "team/e2e_v1.zip"
    pipeline = volume / status["pipelinePath"]
    assert (pipeline / "metadata.json").exists() and zipfile.is_zipfile(volume / status["archive"])
    best = {(m["energySource"], m["outputType"]): m for m in status["bestModels"]}
    assert set(best) == {("rapl-sysfs", "AbsPower"), ("rapl-sysfs", "DynPower"), ("acpi", "AbsPower"),
                         ("acpi", "DynPower")}
    assert status["bestModels"][0]["energySource"] == "rapl-sysfs"  # the first printer column
    for model in best.values():
        assert model["featureGroup"] == "Basic" and model["mae"] <= MAE_MAX_W, model
        folder = pipeline / model["path"]
        assert folder.is_dir(), folder
        recorded = json.loads((folder / "metadata.json").read_text())
        assert recorded.get("mae") == pytest.approx(model["mae"]), recorded  # the status reports the real MAE
    assert status["modelCount"] >= 4
    (job,) = res.jobs(done["metadata"]["uid"])
    assert job["status"]["succeeded"] == 1


def test_energy_estimation_on_the_pipeline_reaches_ready_with_its_summary(world, trained):
    res, volume, data = world["res"], Path(world["volume"]), world["data"]
    half = data.start + (data.end - data.start) / 2
    spec = {"model": {"pipelineRef": {"name": "e2e"}, "energySource": "rapl-sysfs", "outputType": "AbsPower"},
            "input": {"prometheus": {"url": world["prom"].url},
                      "window": {"start": iso_utc(half), "end": iso_utc(data.end), "stepSeconds": data.step},
                      "labelFilters": {"instance": INSTANCE}}}
    res.create("EnergyEstimation", "last-half", spec)
    try:
        done = res.wait_for("EnergyEstimation", "last-half", lambda r: phase(r) in ("Succeeded", "Failed"),
                            timeout=300)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{explain(world, 'last-half')}") from exc
    assert phase(done) == "Succeeded", f"{done['status']}\n{explain(world, 'last-half')}"
    status = done["status"]
    assert condition(done, "Ready") == ("True", "Succeeded")
    assert condition(done, "ModelResolved") == ("True", "ModelLoaded")
    assert (volume / status["resultPath"]).is_file() and status["resultPath"].startswith("team/estimations/")
    summary = status["summary"]
    assert summary["samples"] > 100
    components = {c["component"]: c for c in summary["components"]}
    assert {"package", "dram"} <= set(components)
    for component in components.values():
        assert component["energyJoules"] > 0 and component["meanPowerWatts"] > 0
        assert component.get("mae") is not None and component["mae"] <= 1.0  # measured power is in the input
    tp = res.get("TrainingPipeline", "e2e")
    best_abs = next(m for m in tp["status"]["bestModels"]
                    if (m["energySource"], m["outputType"]) == ("rapl-sysfs", "AbsPower"))
    assert status["model"]["modelName"] == best_abs["modelName"]  # the best model was used


def test_a_window_without_data_fails_with_the_trainers_reason(world):
    res = world["res"]
    res.create("TrainingPipeline", "empty", tp_spec(world, metricPrefix="nothing_", pipelineName="empty"))
    failed = res.wait_for("TrainingPipeline", "empty", lambda r: phase(r) == "Failed", timeout=300)
    assert condition(failed, "DataAvailable") == ("False", "NoKeplerMetrics"), explain(world, "empty-train")
    assert condition(failed, "Ready")[1] == "NoKeplerMetrics"
    assert not (Path(world["volume"]) / "team" / "empty").exists()  # nothing half-written was published


def test_the_bearer_token_secret_reaches_prometheus(world):
    """The token Secret is mounted into the Job and sent by the trainer; a wrong one is a 4xx failure."""
    import base64

    res, gateway = world["res"], world["gateway"]
    for name, token in (("right-token", "s3cret-token"), ("wrong-token", "guess")):
        res.core.create_namespaced_secret(res.namespace, {
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": name, "labels": {"modeltraining.kepler.io/prometheus-credentials": "true"}},
            "data": {"token": base64.b64encode(token.encode()).decode()}}, _preload_content=False)
    common = {"pipelineName": "secured", "storage": {"subPath": "secured"}}
    res.create("TrainingPipeline", "secured", tp_spec(world, prometheus={
        "url": gateway.url, "bearerTokenSecret": {"name": "right-token"}}, **common))
    res.create("TrainingPipeline", "refused", tp_spec(world, prometheus={
        "url": gateway.url, "bearerTokenSecret": {"name": "wrong-token"}},
        pipelineName="refused", storage={"subPath": "refused"}))
    ok = res.wait_for("TrainingPipeline", "secured", lambda r: phase(r) in ("Succeeded", "Failed"), timeout=300)
    assert phase(ok) == "Succeeded", f"{ok['status']}\n{explain(world, 'secured-train')}"
    refused = res.wait_for("TrainingPipeline", "refused", lambda r: phase(r) == "Failed", timeout=300)
    assert condition(refused, "DataAvailable") == ("False", "PrometheusQueryFailed"), \
        explain(world, "refused-train")
    assert {status for _, status in gateway.requests} >= {200, 401}


def test_energy_estimation_from_a_file_and_a_pipeline_path(world, trained):
    """The other branches: a query-output file on the volume, and a pipeline folder instead of a reference."""
    import subprocess
    import sys

    res, volume, data = world["res"], Path(world["volume"]), world["data"]
    inputs = volume / "inputs"
    query = subprocess.run(
        [sys.executable, "-m", "kepler_trainer.cli", "query", "-s", world["prom"].url, "--start-time",
         iso_utc(data.start), "--end-time", iso_utc(data.end), "--label-filter", f"instance={INSTANCE}",
         "--data-path", str(inputs), "-o", "window"], capture_output=True, text=True, timeout=300)
    assert query.returncode == 0, query.stderr
    assert (inputs / "window.json").is_file()
    spec = {"model": {"pipelinePath": "team/e2e_v1", "energySource": "acpi", "outputType": "AbsPower"},
            "input": {"file": "inputs/window.json"}, "storage": {"pvcName": "models", "subPath": "from-file"}}
    res.create("EnergyEstimation", "from-file", spec)
    done = res.wait_for("EnergyEstimation", "from-file", lambda r: phase(r) in ("Succeeded", "Failed"), timeout=300)
    assert phase(done) == "Succeeded", f"{done['status']}\n{explain(world, 'from-file')}"
    assert done["status"]["resultPath"].startswith("from-file/estimations/from-file/")
    assert (volume / done["status"]["resultPath"]).is_file()
    components = {c["component"] for c in done["status"]["summary"]["components"]}
    assert components == {"platform"}  # acpi measures the whole platform


def test_the_profile_isolator_works_from_a_resource(world, trained):
    """Issue 12: the idle profile comes from what the Job can reach, an idle window of the spec's own
    Prometheus or a query output on the volume, and both give the same idle power."""
    import subprocess
    import sys

    res, volume, data = world["res"], Path(world["volume"]), world["data"]
    idle = {"start": iso_utc(data.start), "end": iso_utc(data.start + 600), "stepSeconds": data.step}
    query = subprocess.run(
        [sys.executable, "-m", "kepler_trainer.cli", "query", "-s", world["prom"].url, "--start-time", idle["start"],
         "--end-time", idle["end"], "--step", str(data.step), "--label-equals", f"instance={INSTANCE}",
         "--data-path", str(volume / "profiles"), "-o", "idle"], capture_output=True, text=True, timeout=300)
    assert query.returncode == 0, query.stderr
    common = {"energySources": ["rapl-sysfs"], "absTrainers": ["LinearRegressionTrainer"]}
    res.create("TrainingPipeline", "idle-window", tp_spec(
        world, pipelineName="idle_window", isolator={"type": "profile", "idleWindow": idle}, **common))
    res.create("TrainingPipeline", "idle-file", tp_spec(
        world, pipelineName="idle_file", isolator={"type": "profile", "profile": "profiles/idle.json"}, **common))
    idle_power = {}
    for name, pipeline in (("idle-window", "idle_window"), ("idle-file", "idle_file")):
        done = res.wait_for("TrainingPipeline", name, lambda r: phase(r) in ("Succeeded", "Failed"), timeout=300)
        assert phase(done) == "Succeeded", f"{done['status']}\n{explain(world, name)}"
        meta = json.loads((volume / "team" / pipeline / "metadata.json").read_text())
        assert meta["isolator"] == "profile"
        idle_power[name] = meta["idle_power"]
    assert idle_power["idle-window"] == idle_power["idle-file"]
    assert idle_power["idle-window"]["rapl-sysfs/Basic"]["package_power"] > 0
