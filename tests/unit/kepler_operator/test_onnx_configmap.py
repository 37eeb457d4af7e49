"""spec.onnxConfigMap's pure parts: which model, the ConfigMap, the size and checksum checks, the status."""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import threading

import pytest

from kepler_operator import api, status
from kepler_operator.onnx_configmap import (
    CONDITION,
    MAX_CONFIGMAP_BYTES,
    Choice,
    OnnxConfigMapError,
    check_size,
    choose,
    fetch,
    manifest,
    owned_by,
)

T0, T1 = "2026-11-23T12:00:00Z", "2026-11-23T12:05:00Z"
BEST = [
    {"energySource": "node", "outputType": "DynPower", "featureGroup": "node-exporter", "modelName": "LR_0",
     "trainer": "LinearRegressionTrainer", "mae": 0.5, "path": "node/DynPower/node-exporter/LR_0",
     "onnxModel": "node-exporter/LR_0"},
    {"energySource": "node", "outputType": "AbsPower", "featureGroup": "node-exporter", "modelName": "GB_0",
     "trainer": "GradientBoostingRegressorTrainer", "mae": 1.0, "path": "node/AbsPower/node-exporter/GB_0",
     "onnxModel": "node-exporter/SGD_0"},
]
OWNER = {"metadata": {"name": "vm", "namespace": "team", "uid": "u-1"}}


def test_the_best_exportable_abs_power_model_is_chosen():
    choice = choose("vm_v1", BEST, served_pvc=True)
    # AbsPower before a lower-MAE DynPower; the group's exportable model, not the (unexportable) best one
    assert choice == Choice("vm_v1", "node/AbsPower/node-exporter/SGD_0")
    assert choice.url("http://ms:8100/", "manifest") == \
        "http://ms:8100/onnx/vm_v1/node/AbsPower/node-exporter/SGD_0/manifest"
    assert choose("vm_v1", BEST[:1], served_pvc=True).model == "node/DynPower/node-exporter/LR_0"


@pytest.mark.parametrize("path, best, served, reason", [
    ("vm_v1", [{**m, "onnxModel": ""} for m in BEST], True, "NotExportable"),
    ("vm_v1", [{k: v for k, v in m.items() if k != "onnxModel"} for m in BEST], True, "NotExportable"),
    ("vm_v1", BEST, False, "NotServed"),
    ("team/vm_v1", BEST, True, "NotServed"),
    (None, BEST, True, "NotServed"),
])
def test_what_cannot_be_exported_is_refused_with_a_reason(path, best, served, reason):
    with pytest.raises(OnnxConfigMapError) as caught:
        choose(path, best, served_pvc=served)
    assert caught.value.reason == reason and str(caught.value)


def test_the_configmap_holds_the_bytes_and_is_owned_by_the_pipeline():
    graph, manifest_bytes = bytes(range(256)) * 3, b'{"check": {"exportable": true}}'
    cm = manifest(OWNER, "vm-model", Choice("vm_v1", "node/AbsPower/g/m"), graph, manifest_bytes)
    assert base64.b64decode(cm["binaryData"]["model.onnx"]) == graph
    assert cm["data"] == {"onnx_manifest.json": manifest_bytes.decode()}
    assert cm["metadata"]["name"] == "vm-model" and cm["metadata"]["namespace"] == "team"
    (ref,) = cm["metadata"]["ownerReferences"]
    assert ref["uid"] == "u-1" and ref["kind"] == "TrainingPipeline" and ref["controller"] is True
    assert owned_by(cm, "u-1") and not owned_by(cm, "u-2") and not owned_by(None, "u-1")
    assert not owned_by({"metadata": {"name": "someone-elses"}}, "u-1")


def test_size_limit():
    check_size(MAX_CONFIGMAP_BYTES)
    with pytest.raises(OnnxConfigMapError, match="1 MiB") as caught:
        check_size(MAX_CONFIGMAP_BYTES + 1)
    assert caught.value.reason == "TooLarge"


class _Server:
    """A real HTTP server answering the model server's two ONNX routes with chosen bodies."""

    def __init__(self, files: dict[str, bytes]) -> None:
        outer = self
        self.files = files

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                body = outer.files.get(self.path.rsplit("/", 1)[-1])
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _manifest(graph: bytes, **check: object) -> bytes:
    return json.dumps({"check": {"exportable": True, "sha256": hashlib.sha256(graph).hexdigest(), **check}}).encode()


@pytest.mark.parametrize("files, reason", [
    ({"manifest": _manifest(b"graph"), "model.onnx": b"graph"}, None),
    ({"manifest": _manifest(b"graph"), "model.onnx": b"tampered"}, "ChecksumMismatch"),
    ({"manifest": json.dumps({"check": {"exportable": False, "reason": "no kernel"}}).encode()}, "NotExportable"),
    ({"manifest": b"not json"}, "InvalidManifest"),
    ({"manifest": _manifest(b"x" * (MAX_CONFIGMAP_BYTES + 1)), "model.onnx": b"x" * (MAX_CONFIGMAP_BYTES + 1)},
     "TooLarge"),
    ({}, "ModelServerError"),
])
def test_fetch_checks_what_the_model_server_answers(files, reason):
    server = _Server(files)
    try:
        if reason is None:
            assert fetch(server.url, Choice("p", "s/AbsPower/g/m")) == (files["model.onnx"], files["manifest"])
        else:
            with pytest.raises(OnnxConfigMapError) as caught:
                fetch(server.url, Choice("p", "s/AbsPower/g/m"))
            assert caught.value.reason == reason, caught.value
    finally:
        server.close()


def test_an_unreachable_model_server_is_a_reason_not_a_crash():
    server = _Server({})
    url = server.url
    server.close()
    with pytest.raises(OnnxConfigMapError) as caught:
        fetch(url, Choice("p", "s/AbsPower/g/m"))
    assert caught.value.reason == "ModelServerUnreachable"


def _succeeded(job_name: str = "vm-train-g1") -> dict:
    return api.TrainingPipelineStatus.model_validate({
        "phase": "Succeeded", "lastRun": {"jobName": job_name, "trigger": "Created"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Succeeded", "lastTransitionTime": T0}],
    }).dump()


WRITTEN = {"name": "vm-model", "jobName": "vm-train-g1", "model": "node/AbsPower/g/m", "sha256": "ab", "bytes": 3}


def test_status_records_the_written_configmap_and_keeps_it_across_passes():
    assert status.onnx_configmap_due("vm-model", _succeeded())
    assert not status.onnx_configmap_due(None, _succeeded())
    assert not status.onnx_configmap_due("vm-model", {**_succeeded(), "phase": "Running"})
    first = status.with_onnx_configmap(_succeeded(), {}, wanted=True, written=WRITTEN, now=T0, generation=1)
    assert first["onnxConfigMap"] == WRITTEN
    cond = next(c for c in first["conditions"] if c["type"] == CONDITION)
    assert (cond["status"], cond["reason"], cond["lastTransitionTime"]) == ("True", "ConfigMapWritten", T0)
    assert not status.onnx_configmap_due("vm-model", first)  # written once per run
    assert status.onnx_configmap_due("other-name", first)
    # the next pass recomputes the run's status without it: what was written is carried over unchanged
    again = status.with_onnx_configmap(_succeeded(), first, wanted=True, now=T1, generation=1)
    assert again == first
    # a new run makes it due; a failure then is a condition, the last ConfigMap written stays named
    rerun = _succeeded("vm-train-g2")
    assert status.onnx_configmap_due("vm-model", {**rerun, "onnxConfigMap": WRITTEN})
    failed = status.with_onnx_configmap(rerun, first, wanted=True, now=T1, generation=2,
                                        problem=OnnxConfigMapError("ModelServerUnreachable", "GET ...: refused"))
    cond = next(c for c in failed["conditions"] if c["type"] == CONDITION)
    assert (cond["status"], cond["reason"], cond["lastTransitionTime"]) == ("False", "ModelServerUnreachable", T1)
    assert failed["onnxConfigMap"] == WRITTEN and failed["phase"] == "Succeeded"
    # spec.onnxConfigMap removed: condition and field go
    dropped = status.with_onnx_configmap(_succeeded(), first, wanted=False, now=T1, generation=3)
    assert "onnxConfigMap" not in dropped and all(c["type"] != CONDITION for c in dropped["conditions"])
