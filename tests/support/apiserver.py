"""A real Kubernetes API server for tests: the CRD apiserver from shared/tools/crd-apiserver, or $KUBECONFIG.

    with kube_api() as kube:        # starts etcd + apiextensions-apiserver + shim on free ports
        kube.kubeconfig, kube.client, kube.namespace

With KUBECONFIG set, the same tests run against that cluster instead (nothing is started; a fresh
namespace is created and deleted). Without either, `skip_reason()` says why the tier cannot run.

Also here: `OperatorProcess` runs the operator (`python -m kepler_operator`) against such a server,
and `Resources` wraps the custom-objects calls the operator tests make.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from .checkout import ROOT, stop

REPO = ROOT
TOOLS = Path(os.environ.get("CRD_APISERVER_TOOLS", REPO.parent / "shared" / "tools" / "crd-apiserver"))
BIN = Path(os.environ.get("BIN", "/opt/crd-apiserver-bin"))
CRDS = [REPO / "crds" / "trainingpipelines.yaml", REPO / "crds" / "energyestimations.yaml"]
GROUP, VERSION = "modeltraining.kepler.io", "v1alpha1"
SELECTOR = "app.kubernetes.io/managed-by=kepler-model-operator"


def skip_reason() -> str | None:
    """Why the API-server tier cannot run here, or None when it can."""
    if os.environ.get("KUBECONFIG"):
        return None
    if not (BIN / "apiextensions-apiserver").exists() or not (BIN / "etcd").exists():
        return f"no KUBECONFIG and no CRD apiserver binaries in {BIN} (build them with {TOOLS}/build.sh)"
    if not (TOOLS / "start.sh").exists():
        return f"no KUBECONFIG and no {TOOLS}/start.sh"
    return None


def iso_utc(ts: float) -> str:
    """A unix time as the RFC 3339 UTC string a resource's spec takes (whole seconds)."""
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def free_port(pair: bool = False) -> int:
    """A free loopback port (and, with pair, the next one free too: etcd uses port+1 for peers)."""
    for _ in range(50):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if not pair or port >= 65535:
            return port
        with socket.socket() as other:
            try:
                other.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise RuntimeError("no free port pair found")


@dataclasses.dataclass
class KubeAPI:
    """A reachable API server: its kubeconfig, a client, and a namespace for the test."""

    kubeconfig: str
    client: client.ApiClient
    namespace: str
    run_dir: Path | None = None

    def apply_crds(self, paths: list[Path] = CRDS, timeout: float = 30) -> None:
        """Create or replace our CRDs and wait until their resources are served."""
        ext = client.ApiextensionsV1Api(self.client)
        for path in paths:
            body = yaml.safe_load(path.read_text())
            try:
                ext.create_custom_resource_definition(body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                current = ext.read_custom_resource_definition(body["metadata"]["name"])
                body["metadata"]["resourceVersion"] = current.metadata.resource_version
                ext.replace_custom_resource_definition(body["metadata"]["name"], body)
        custom = client.CustomObjectsApi(self.client)
        deadline = time.monotonic() + timeout
        for path in paths:
            spec = yaml.safe_load(path.read_text())["spec"]
            while True:
                try:
                    custom.list_namespaced_custom_object(spec["group"], spec["versions"][0]["name"], self.namespace,
                                                         spec["names"]["plural"])
                    break
                except ApiException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

    def env(self) -> dict[str, str]:
        """Environment for a subprocess that should talk to this server."""
        return {**os.environ, "KUBECONFIG": self.kubeconfig}


def _ensure_namespace(api: client.ApiClient, name: str, timeout: float = 60.0) -> None:
    """Create the namespace; right after start-up the shim's Namespace kind may not be served yet
    (404) or its storage may still initialise (429), so those are retried until `timeout`."""
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.CoreV1Api(api).create_namespace(body, _preload_content=False)
            return
        except ApiException as exc:
            if exc.status == 409:
                return
            if exc.status not in (404, 429) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@contextlib.contextmanager
def kube_api(namespace: str | None = None) -> Iterator[KubeAPI]:
    """Start the CRD apiserver on free ports (or use $KUBECONFIG), yield it, and stop it afterwards."""
    reason = skip_reason()
    if reason:
        raise RuntimeError(reason)
    ns = namespace or f"kmo-test-{uuid.uuid4().hex[:6]}"
    if os.environ.get("KUBECONFIG"):
        kubeconfig = os.environ["KUBECONFIG"].split(os.pathsep)[0]
        api = config.new_client_from_config(kubeconfig)
        _ensure_namespace(api, ns)
        try:
            yield KubeAPI(kubeconfig=kubeconfig, client=api, namespace=ns)
        finally:
            with contextlib.suppress(ApiException):
                client.CoreV1Api(api).delete_namespace(ns)
            api.close()
        return
    env = {**os.environ, "BIN": str(BIN), "ETCD_PORT": str(free_port(pair=True)),
           "APISERVER_PORT": str(free_port()), "SHIM_PORT": str(free_port())}
    started = subprocess.run(["bash", str(TOOLS / "start.sh")], env=env, capture_output=True, text=True, timeout=120)
    run_dir = Path(started.stdout.strip().splitlines()[-1]) if started.stdout.strip() else None
    try:
        if started.returncode != 0 or run_dir is None:
            raise RuntimeError(f"start.sh failed ({started.returncode}): {started.stderr[-2000:]}")
        kubeconfig = str(run_dir / "kubeconfig")
        api = config.new_client_from_config(kubeconfig)
        _ensure_namespace(api, ns)
        yield KubeAPI(kubeconfig=kubeconfig, client=api, namespace=ns, run_dir=run_dir)
        api.close()
    finally:
        if run_dir is not None:
            subprocess.run(["bash", str(TOOLS / "stop.sh"), str(run_dir)], check=False, timeout=30)




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
        if self.proc is not None:
            stop(self.proc)

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
    _ensure_namespace(kube.client, name)
    return name


# ------------------------------------------------------------------ pytest fixtures (a conftest plugin)

@pytest.fixture(scope="module")
def kube() -> Iterator[KubeAPI]:
    """A CRD apiserver with our CRDs, one per test module (skipped where the tier cannot run)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with kube_api() as api:
        api.apply_crds()
        yield api


@pytest.fixture
def ns(kube: KubeAPI) -> str:
    """A fresh namespace per test."""
    return ensure_namespace(kube, f"t-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def res(kube: KubeAPI, ns: str) -> Resources:
    return Resources(kube, ns)


@pytest.fixture
def operator_settings() -> dict[str, str]:
    """`KEPLER_OPERATOR_*` settings of the `operator` fixture; a test module overrides this fixture."""
    return {}


@pytest.fixture
def operator(kube: KubeAPI, ns: str, operator_settings: dict[str, str]) -> Iterator[OperatorProcess]:
    """The operator watching the test's namespace."""
    proc = OperatorProcess(kube, ns, **operator_settings).start()
    yield proc
    proc.close()
