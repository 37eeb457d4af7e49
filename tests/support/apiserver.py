"""A real Kubernetes API server for tests: the CRD apiserver from shared/tools/crd-apiserver, or $KUBECONFIG.

    with kube_api() as kube:        # starts etcd + apiextensions-apiserver + shim on free ports
        kube.kubeconfig, kube.client, kube.namespace

With KUBECONFIG set, the same tests run against that cluster instead (nothing is started; a fresh
namespace is created and deleted). Without either, `skip_reason()` says why the tier cannot run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

REPO = Path(__file__).resolve().parents[2]
TOOLS = Path(os.environ.get("CRD_APISERVER_TOOLS", REPO.parent / "shared" / "tools" / "crd-apiserver"))
BIN = Path(os.environ.get("BIN", "/opt/crd-apiserver-bin"))
CRDS = [REPO / "crds" / "trainingpipelines.yaml", REPO / "crds" / "energyestimations.yaml"]


def skip_reason() -> str | None:
    """Why the API-server tier cannot run here, or None when it can."""
    if os.environ.get("KUBECONFIG"):
        return None
    if not (BIN / "apiextensions-apiserver").exists() or not (BIN / "etcd").exists():
        return f"no KUBECONFIG and no CRD apiserver binaries in {BIN} (build them with {TOOLS}/build.sh)"
    if not (TOOLS / "start.sh").exists():
        return f"no KUBECONFIG and no {TOOLS}/start.sh"
    return None


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


def _ensure_namespace(api: client.ApiClient, name: str) -> None:
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    try:
        client.CoreV1Api(api).create_namespace(body, _preload_content=False)
    except ApiException as exc:
        if exc.status != 409:
            raise


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
