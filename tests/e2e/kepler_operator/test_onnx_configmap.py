"""Issue 15 end to end: a TrainingPipeline with a feature-set preset and spec.onnxConfigMap, trained by the real
trainer from a real Prometheus (node-exporter- and Kepler-0.10-shaped series derived from a real dump,
tests/support/vmdata.py), its best ONNX model fetched by the operator from a real `kepler-model serve` over the
same models folder, and written into the ConfigMap the status names. With the model server down, a new run
still succeeds and the refusal is a condition; once the server is back, the operator catches up."""

from __future__ import annotations

import base64
import hashlib
import json
import uuid
from pathlib import Path

import pytest
from kubernetes import client

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
from tests.support.server import ServerProcess

pytestmark = [pytest.mark.apiserver, pytest.mark.prometheus, pytest.mark.slow, pytest.mark.timeout(600)]
CONFIGMAP = "node-model"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    for reason in (skip_reason(), kepler_model_available()):
        if reason:
            pytest.skip(reason)
    prometheus = pytest.importorskip("tests.support.prometheus")
    prometheus.require_binaries()
    from tests.support.vmdata import Derived, derive, measuring_node

    derived = derive()
    node = Derived(derived.timestamps, derived.busy, derived.power, derived.series + measuring_node(derived))
    volume = tmp_path_factory.mktemp("pvc-models")
    server = ServerProcess(volume)
    server.start()
    with prometheus.start_prometheus(tmp_path_factory.mktemp("prom"), openmetrics=node.openmetrics()) as prom, \
            kube_api() as kube:
        kube.apply_crds()
        ns = ensure_namespace(kube, f"onnx-{uuid.uuid4().hex[:6]}")
        operator = OperatorProcess(kube, ns, default_pvc="models", allowed_prometheus_urls=prom.url,
                                   model_server_url=server.url, resync_seconds="3").start()
        try:
            with Kubelet(kube.client, ns, SELECTOR, volumes={"models": volume}) as kubelet:
                yield {"kube": kube, "ns": ns, "prom": prom, "derived": derived, "volume": volume, "server": server,
                       "kubelet": kubelet, "res": Resources(kube, ns), "operator": operator}
        finally:
            operator.close()
            server.stop()


def _spec(world) -> dict:
    ts = world["derived"].timestamps
    return {"prometheus": {"url": world["prom"].url},
            "window": {"start": iso_utc(ts[0]), "end": iso_utc(ts[-1]), "stepSeconds": 3},
            "pipelineName": "node_v1", "featureSet": {"preset": "node-exporter"},
            "absTrainers": ["LinearRegressionTrainer"], "dynTrainers": ["LinearRegressionTrainer"],
            "onnxConfigMap": {"name": CONFIGMAP}}


def _explain(world) -> str:
    logs = "\n".join(f"--- {pod}\n{text[-3000:]}" for pod, text in world["kubelet"].logs.items())
    return f"trainer output:\n{logs}\noperator log:\n{world['operator'].output()[-4000:]}"


def _wait(world, check, what: str, timeout: float = 300) -> dict:
    try:
        return world["res"].wait_for("TrainingPipeline", "node", check, timeout=timeout)
    except AssertionError as exc:
        raise AssertionError(f"{what}: {exc}\n{_explain(world)}") from exc


def _configmap(world) -> dict:
    return client.CoreV1Api(world["kube"].client).read_namespaced_config_map(CONFIGMAP, world["ns"]).to_dict()


def _check_configmap_is_the_published_model(world, tp: dict) -> None:
    written = tp["status"]["onnxConfigMap"]
    assert written["name"] == CONFIGMAP and written["jobName"] == tp["status"]["lastRun"]["jobName"]
    folder = Path(world["volume"]) / tp["status"]["pipelinePath"] / written["model"]
    graph = (folder / "model.onnx").read_bytes()
    cm = _configmap(world)
    assert base64.b64decode(cm["binary_data"]["model.onnx"]) == graph
    assert cm["data"] == {"onnx_manifest.json": (folder / "onnx_manifest.json").read_text()}
    manifest = json.loads(cm["data"]["onnx_manifest.json"])
    assert manifest["check"]["exportable"] and manifest["check"]["sha256"] == written["sha256"]
    assert hashlib.sha256(graph).hexdigest() == written["sha256"] and written["bytes"] == len(graph)
    (ref,) = cm["metadata"]["owner_references"]
    assert ref["uid"] == tp["metadata"]["uid"] and ref["kind"] == "TrainingPipeline"
    # the chosen model is the run's best exportable AbsPower model, as the status lists it
    best = next(m for m in tp["status"]["bestModels"] if m["outputType"] == "AbsPower")
    assert written["model"] == f"{best['energySource']}/AbsPower/{best['onnxModel']}"


def test_the_best_onnx_model_lands_in_the_configmap_named_in_status(world):
    world["res"].create("TrainingPipeline", "node", _spec(world))
    tp = _wait(world, lambda r: phase(r) == "Failed" or (condition(r, "OnnxConfigMapReady") or ("",))[0] == "True",
               "the ConfigMap was not written")
    assert phase(tp) == "Succeeded", f"{tp['status']}\n{_explain(world)}"
    assert condition(tp, "OnnxConfigMapReady") == ("True", "ConfigMapWritten")
    assert tp["status"]["pipelinePath"] == "node_v1"
    _check_configmap_is_the_published_model(world, tp)


def test_an_unreachable_model_server_is_a_condition_and_the_operator_catches_up(world):
    res = world["res"]
    before = res.get("TrainingPipeline", "node")
    first_job = before["status"]["onnxConfigMap"]["jobName"]
    world["server"].stop()
    res.patch("TrainingPipeline", "node", {"metadata": {"annotations": {"modeltraining.kepler.io/rerun": "1"}}})
    tp = _wait(world, lambda r: (r.get("status") or {}).get("lastRun", {}).get("jobName") != first_job
               and condition(r, "OnnxConfigMapReady") == ("False", "ModelServerUnreachable"),
               "the refusal did not show")
    assert phase(tp) == "Succeeded" and condition(tp, "Ready") == ("True", "Succeeded")
    assert tp["status"]["onnxConfigMap"]["jobName"] == first_job  # the last ConfigMap written is still named
    assert world["operator"].proc.poll() is None  # no crash
    world["server"].start()
    tp = _wait(world, lambda r: condition(r, "OnnxConfigMapReady") == ("True", "ConfigMapWritten"),
               "the operator did not catch up", timeout=120)
    assert tp["status"]["onnxConfigMap"]["jobName"] == tp["status"]["lastRun"]["jobName"] != first_job
    _check_configmap_is_the_published_model(world, tp)
