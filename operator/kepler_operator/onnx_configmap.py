"""A TrainingPipeline's best ONNX model, written into a ConfigMap for a DaemonSet or Kepler to mount.

The operator never mounts the models volume: it asks the model server (`GET /onnx/...`,
kepler_model_server/onnx_routes.py) for the published graph and its manifest, checks the graph against the SHA-256 the
trainer recorded when it checked the export, and only then writes the ConfigMap. Every refusal is an
`OnnxConfigMapError` with a reason, shown as the `OnnxConfigMapReady` condition; the run stays Succeeded.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any

from . import api
from .errors import OperatorError
from .jobs import LABEL_OWNER_UID, MANAGED_BY

MAX_CONFIGMAP_BYTES = 1024 * 1024
"""The API server's limit for a ConfigMap's data and binaryData together (base64 counts as raw bytes)."""
MODEL_KEY, MANIFEST_KEY = "model.onnx", "onnx_manifest.json"
CONDITION = "OnnxConfigMapReady"
FETCH_TIMEOUT_SECONDS = 10.0


class OnnxConfigMapError(OperatorError):
    """Why the ONNX ConfigMap could not be written (a condition's reason and message)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class Choice:
    """The model to export: its path in the pipeline tree (<source>/<output type>/<group>/<model>)."""

    pipeline: str
    model: str

    def url(self, base: str, which: str) -> str:
        parts = [self.pipeline, *self.model.split("/"), which]
        return base.rstrip("/") + "/onnx/" + "/".join(urllib.parse.quote(p, safe="") for p in parts)


def choose(pipeline_path: str | None, best_models: list[Mapping[str, Any]], served_pvc: bool) -> Choice:
    """The lowest-MAE best model with a checked ONNX graph, where the model server can serve it."""
    if not served_pvc:
        raise OnnxConfigMapError("NotServed", "the pipeline is published on another PVC than the model "
                                              "server's: the operator cannot fetch its ONNX model")
    if not pipeline_path or "/" in pipeline_path:
        raise OnnxConfigMapError("NotServed", f"the model server serves pipelines at the top of its volume, "
                                              f"not {pipeline_path!r} (storage.subPath must be empty)")
    candidates = [m for m in best_models if m.get("onnxModel")]
    if not candidates:
        raise OnnxConfigMapError("NotExportable", "no best model of the run has a checked model.onnx "
                                                  "(see each model's onnx_manifest.json for the reason)")
    best = min(candidates, key=_preference)
    return Choice(pipeline_path, f"{best['energySource']}/{best['outputType']}/{best['onnxModel']}")


def _preference(model: Mapping[str, Any]) -> tuple[bool, float]:
    """AbsPower first (a node without a meter needs its whole power), then the lowest MAE."""
    mae = model.get("mae")
    return model.get("outputType") != "AbsPower", float(mae) if isinstance(mae, (int, float)) else float("inf")


def _get(url: str, limit: int) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=FETCH_TIMEOUT_SECONDS) as response:  # noqa: S310 (http(s) only)
            body: bytes = response.read(limit + 1)
    except urllib.error.HTTPError as exc:
        raise OnnxConfigMapError("ModelServerError", f"GET {url}: {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise OnnxConfigMapError("ModelServerUnreachable", f"GET {url}: {reason}") from exc
    return body


def fetch(base_url: str, choice: Choice) -> tuple[bytes, bytes]:
    """(model.onnx, manifest) from the model server, the graph checked against the manifest's SHA-256."""
    manifest_bytes = _get(choice.url(base_url, "manifest"), MAX_CONFIGMAP_BYTES)
    try:
        check = json.loads(manifest_bytes).get("check") or {}
    except (ValueError, AttributeError) as exc:
        raise OnnxConfigMapError("InvalidManifest", f"the manifest of {choice.model} is not JSON") from exc
    if check.get("exportable") is not True or not isinstance(check.get("sha256"), str):
        raise OnnxConfigMapError("NotExportable", f"{choice.model} is not exportable: "
                                                  f"{check.get('reason') or 'its manifest has no checked graph'}")
    graph = _get(choice.url(base_url, MODEL_KEY), MAX_CONFIGMAP_BYTES)
    check_size(len(graph) + len(manifest_bytes))
    if hashlib.sha256(graph).hexdigest() != check["sha256"]:
        raise OnnxConfigMapError("ChecksumMismatch", f"model.onnx of {choice.model} does not match the SHA-256 "
                                                     "in its manifest")
    return graph, manifest_bytes


def check_size(total: int) -> None:
    if total > MAX_CONFIGMAP_BYTES:
        raise OnnxConfigMapError("TooLarge", f"model.onnx and its manifest exceed a ConfigMap's 1 MiB "
                                             f"({total:,} bytes or more); mount the models volume instead")


def manifest(owner: Mapping[str, Any], name: str, choice: Choice, graph: bytes, manifest_bytes: bytes) \
        -> dict[str, Any]:
    """The ConfigMap: the graph as binaryData, the manifest as text, owned by the TrainingPipeline."""
    meta = owner["metadata"]
    return {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {
            "name": name, "namespace": meta["namespace"],
            "labels": {"app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/component": "onnx-model",
                       LABEL_OWNER_UID: meta["uid"]},
            "annotations": {"kepler-model.io/pipeline": choice.pipeline, "kepler-model.io/model": choice.model},
            "ownerReferences": [{"apiVersion": api.API_VERSION, "kind": api.TrainingPipeline.kind,
                                 "name": meta["name"], "uid": meta["uid"], "controller": True,
                                 "blockOwnerDeletion": False}]},
        "binaryData": {MODEL_KEY: base64.b64encode(graph).decode()},
        "data": {MANIFEST_KEY: manifest_bytes.decode("utf-8", errors="replace")},
    }


def owned_by(configmap: Mapping[str, Any] | None, uid: str) -> bool:
    """Whether an existing ConfigMap is this resource's to overwrite (never someone else's)."""
    refs = ((configmap or {}).get("metadata") or {}).get("ownerReferences") or []
    return any(r.get("uid") == uid and r.get("controller") for r in refs)
