"""Run the operator as a real process (`python -m kepler_operator`) against a test API server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from .apiserver import KubeAPI, free_port

GROUP, VERSION = "modeltraining.kepler.io", "v1alpha1"
SELECTOR = "app.kubernetes.io/managed-by=kepler-model-operator"


class OperatorProcess:
    """The operator in a subprocess watching one namespace; start, stop, or kill -9 it."""

    def __init__(self, kube: KubeAPI, namespace: str, **settings: str) -> None:
        self.kube, self.namespace = kube, namespace
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="operator-", suffix=".log", delete=False)  # noqa: SIM115
        self.port = 0

    def start(self, timeout: float = 30) -> OperatorProcess:
        self.port = free_port()
        env = {**self.kube.env(), "KEPLER_OPERATOR_NAMESPACES": self.namespace,
               "KEPLER_OPERATOR_LIVENESS_ENDPOINT": f"http://127.0.0.1:{self.port}/healthz",
               **{f"KEPLER_OPERATOR_{k.upper()}": v for k, v in self.settings.items()}}
        self.proc = subprocess.Popen([sys.executable, "-m", "kepler_operator"], env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the operator exited with {self.proc.returncode}:\n{self.output()[-3000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"the operator did not answer its liveness probe:\n{self.output()[-3000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a node dies."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()

    def output(self) -> str:
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def close(self) -> None:
        self.stop()
        self.log.close()
        os.unlink(self.log.name)


class Resources:
    """Small helpers over the custom-objects API for one namespace."""

    def __init__(self, kube: KubeAPI, namespace: str) -> None:
        self.custom = client.CustomObjectsApi(kube.client)
        self.batch = client.BatchV1Api(kube.client)
        self.core = client.CoreV1Api(kube.client)
        self.namespace = namespace

    def create(self, kind: str, name: str, spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {"name": name, **meta}, "spec": spec}
        return self.custom.create_namespaced_custom_object(GROUP, VERSION, self.namespace, plural(kind), body,
                                                           field_validation="Strict")

    def get(self, kind: str, name: str) -> dict[str, Any]:
        return self.custom.get_namespaced_custom_object(GROUP, VERSION, self.namespace, plural(kind), name)

    def patch(self, kind: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        return self.custom.patch_namespaced_custom_object(GROUP, VERSION, self.namespace, plural(kind), name, body)

    def delete(self, kind: str, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, plural(kind), name)

    def jobs(self, owner_uid: str | None = None) -> list[dict[str, Any]]:
        selector = SELECTOR + (f",{GROUP}/owner-uid={owner_uid}" if owner_uid else "")
        response = self.batch.list_namespaced_job(self.namespace, label_selector=selector, _preload_content=False)
        return sorted(json.loads(response.data)["items"], key=lambda j: j["metadata"]["name"])

    def events(self, name: str) -> list[dict[str, Any]]:
        response = self.core.list_namespaced_event(self.namespace, _preload_content=False)
        return [e for e in json.loads(response.data)["items"] if e["involvedObject"]["name"] == name]

    def wait_for(self, kind: str, name: str, check: Callable[[dict[str, Any]], bool], timeout: float = 30) -> \
            dict[str, Any]:
        """The resource once `check(resource)` holds; fails with its last status after `timeout`."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        while time.monotonic() < deadline:
            try:
                last = self.get(kind, name)
                if check(last):
                    return last
            except ApiException:
                pass
            time.sleep(0.1)
        raise AssertionError(f"{kind} {name} did not converge in {timeout}s; status: "
                             f"{json.dumps(last.get('status'), indent=1)}")


def plural(kind: str) -> str:
    return {"TrainingPipeline": "trainingpipelines", "EnergyEstimation": "energyestimations"}[kind]


def condition(resource: dict[str, Any], kind: str) -> tuple[str, str] | None:
    for cond in (resource.get("status") or {}).get("conditions") or []:
        if cond["type"] == kind:
            return cond["status"], cond["reason"]
    return None


def phase(resource: dict[str, Any]) -> str | None:
    return (resource.get("status") or {}).get("phase")


def ensure_namespace(kube: KubeAPI, name: str) -> str:
    try:
        client.CoreV1Api(kube.client).create_namespace({"apiVersion": "v1", "kind": "Namespace",
                                                        "metadata": {"name": name}}, _preload_content=False)
    except ApiException as exc:
        if exc.status != 409:
            raise
    return name
