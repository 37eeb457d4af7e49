"""The fast operator tier: the real operator loop (kopf's KopfRunner) against KMock's Kubernetes emulator.

KMock (pinned: kmock 0.8 with kopf 1.45) keeps objects in memory and streams watch events, but has no
API machinery: no uid, generation, defaults or status subresource. The tests therefore create
complete objects (with uid and generation) and play the Job controller by patching Job and pod
status themselves. What is checked is the operator's own loop: the Job it creates, the status it
writes for each Job state, and its bookkeeping annotations.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config

kmock = pytest.importorskip("kmock")
from kopf.testing import KopfRunner  # noqa: E402

from kepler_operator import api  # noqa: E402

pytestmark = [pytest.mark.timeout(120)]

NS = "fast"
TP_PLURAL = "trainingpipelines"
SUMMARY = {"ok": True, "command": "train", "pipeline": "std", "path": "/models/std", "archive": "/models/std.zip",
           "models": 3, "best": [{"energy_source": "rapl-sysfs", "output_type": "AbsPower", "feature_group": "BPFOnly",
                                  "model_name": "LR_0", "trainer": "LinearRegressionTrainer", "mae": 0.75,
                                  "path": "rapl-sysfs/AbsPower/BPFOnly/LR_0"}]}


class KMockThread:
    """KMock's emulator served from its own thread and event loop, so a sync test can drive KopfRunner."""

    def __init__(self) -> None:
        self.url = ""
        self.emulator: Any = None
        self._ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with kmock.KubernetesEmulator() as emulator, kmock.Server(emulator) as server:
            for resource, kind, subresources in (
                    (f"{api.GROUP}/{api.VERSION}/{TP_PLURAL}", "TrainingPipeline", {"status"}),
                    (f"{api.GROUP}/{api.VERSION}/energyestimations", "EnergyEstimation", {"status"}),
                    ("batch/v1/jobs", "Job", {"status"}), ("v1/pods", "Pod", {"status"}), ("v1/events", "Event", set()),
            ):
                emulator.resources[resource] = kmock.ResourceInfo(
                    kind=kind, namespaced=True, subresources=subresources,
                    verbs={"get", "list", "watch", "create", "patch", "update", "delete"})
            # kopf waits for these two to be discoverable before it starts any watch
            emulator.resources["v1/namespaces"] = kmock.ResourceInfo(kind="Namespace", namespaced=False,
                                                                     verbs={"get", "list", "watch"})
            emulator.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = kmock.ResourceInfo(
                kind="CustomResourceDefinition", namespaced=False, verbs={"get", "list", "watch"})
            self.emulator, self.url = emulator, str(server.url).rstrip("/")
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> KMockThread:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("kmock did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[client.ApiClient]:
    with KMockThread() as mock:
        kubeconfig = tmp_path / "kubeconfig"
        kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "kmock",
            "clusters": [{"name": "kmock", "cluster": {"server": mock.url}}],
            "users": [{"name": "kmock", "user": {"token": "kmock"}}],
            "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "kmock", "namespace": NS}}]}))
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        # the library read $KUBECONFIG at import time; kopf's own login goes through that default
        monkeypatch.setattr(config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
        monkeypatch.setenv("KEPLER_OPERATOR_RESYNC_SECONDS", "1")
        monkeypatch.setenv("KEPLER_OPERATOR_ALLOWED_PROMETHEUS_URLS", "http://prometheus:9090")  # the policy
        from kepler_operator.settings import get_settings
        get_settings.cache_clear()
        yield config.new_client_from_config(str(kubeconfig))
        get_settings.cache_clear()


def runner() -> KopfRunner:
    return KopfRunner(["run", "--standalone", "--namespace", NS, "-m", "kepler_operator.handlers"])


def create_tp(api_client: client.ApiClient, name: str, **spec: Any) -> dict[str, Any]:
    body = {"apiVersion": api.API_VERSION, "kind": "TrainingPipeline",
            "metadata": {"name": name, "namespace": NS, "uid": str(uuid.uuid4()), "generation": 1,
                         "creationTimestamp": "2026-11-23T12:00:00Z"},
            "spec": {"prometheus": {"url": "http://prometheus:9090"}, "window": {"intervalSeconds": 600},
                     "pipelineName": "std", **spec}}
    client.CustomObjectsApi(api_client).create_namespaced_custom_object(api.GROUP, api.VERSION, NS, TP_PLURAL, body)
    return body


def get_tp(api_client: client.ApiClient, name: str) -> dict[str, Any]:
    return client.CustomObjectsApi(api_client).get_namespaced_custom_object(api.GROUP, api.VERSION, NS, TP_PLURAL,
                                                                            name)


def wait(check, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {check}")


def list_jobs(api_client: client.ApiClient) -> list[dict[str, Any]]:
    data = client.BatchV1Api(api_client).list_namespaced_job(NS, _preload_content=False).data
    return json.loads(data)["items"]


def phase_of(api_client: client.ApiClient, name: str) -> str | None:
    return (get_tp(api_client, name).get("status") or {}).get("phase")


def test_create_run_complete(cluster):
    batch, core = client.BatchV1Api(cluster), client.CoreV1Api(cluster)
    with runner() as operator:
        tp = create_tp(cluster, "demo")
        (job,) = wait(lambda: list_jobs(cluster))
        assert job["metadata"]["name"] == "demo-train-g1"
        assert job["metadata"]["ownerReferences"][0]["uid"] == tp["metadata"]["uid"]
        assert wait(lambda: phase_of(cluster, "demo") == "Pending")

        batch.patch_namespaced_job_status("demo-train-g1", NS, {"status": {"active": 1,
                                                                           "startTime": "2026-11-23T12:00:01Z"}})
        assert wait(lambda: phase_of(cluster, "demo") == "Running")

        labels = {**job["spec"]["template"]["metadata"]["labels"], "job-name": "demo-train-g1"}
        core.create_namespaced_pod(NS, {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": "demo-train-g1-x", "namespace": NS, "labels": labels}, "status": {"containerStatuses": [
                {"name": "trainer", "image": "trainer:1", "imageID": "", "ready": False, "restartCount": 0,
                 "state": {"terminated": {"exitCode": 0, "message": json.dumps(SUMMARY),
                                          "finishedAt": "2026-11-23T12:01:00Z"}}}]}})
        batch.patch_namespaced_job_status("demo-train-g1", NS, {"status": {"active": 0, "succeeded": 1, "conditions": [
            {"type": "Complete", "status": "True", "lastTransitionTime": "2026-11-23T12:01:01Z"}]}})
        assert wait(lambda: phase_of(cluster, "demo") == "Succeeded")
        status = get_tp(cluster, "demo")["status"]
        assert status["bestModels"][0]["mae"] == 0.75 and status["modelCount"] == 3
        assert status["pipelinePath"] == "std" and status["lastRun"]["completionTime"] == "2026-11-23T12:01:01Z"
        time.sleep(1.5)  # a resync pass changes nothing
        assert len(list_jobs(cluster)) == 1 and get_tp(cluster, "demo")["status"] == status
    assert operator.exception is None, operator.output
    annotations = get_tp(cluster, "demo")["metadata"].get("annotations") or {}
    assert "kopf.modeltraining.kepler.io/last-handled-configuration" in annotations
    assert not get_tp(cluster, "demo")["metadata"].get("finalizers")


def test_job_failure_with_an_exit_code_only(cluster):
    batch = client.BatchV1Api(cluster)
    with runner() as operator:
        create_tp(cluster, "broken")
        wait(lambda: list_jobs(cluster))
        batch.patch_namespaced_job_status("broken-train-g1", NS, {"status": {"conditions": [
            {"type": "Failed", "status": "True", "reason": "DeadlineExceeded", "message": "Job was active longer",
             "lastTransitionTime": "2026-11-23T12:01:01Z"}]}})
        assert wait(lambda: phase_of(cluster, "broken") == "Failed")
        ready = next(c for c in get_tp(cluster, "broken")["status"]["conditions"] if c["type"] == "Ready")
        assert (ready["status"], ready["reason"]) == ("False", "DeadlineExceeded")
    assert operator.exception is None, operator.output


def test_an_invalid_spec_is_reported_not_run(cluster):
    """A cluster without CEL (or an old object) lets a bad spec in: the operator reports it."""
    with runner() as operator:
        create_tp(cluster, "invalid", window={"intervalSeconds": 600, "start": "2026-01-01T00:00:00Z"})
        assert wait(lambda: phase_of(cluster, "invalid") == "Failed")
        ready = next(c for c in get_tp(cluster, "invalid")["status"]["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "InvalidSpec" and "spec.window" in ready["message"]
        assert list_jobs(cluster) == []
    assert operator.exception is None, operator.output
