"""The shipped CRDs and samples against a real API server (the CRD apiserver tier, or $KUBECONFIG).

What a GitOps tool does, done with kubectl server-side apply: the CRDs as kustomize renders them are
accepted and served, the samples are accepted as they are, applying the same manifests twice changes
nothing, the status the operator writes survives a re-apply (status never drifts spec, and spec
never drifts from Git), and manifests that break the schema or its CEL rules are rejected.
The core kinds the tier serves (PersistentVolumeClaim, Service, ConfigMap) are applied twice too;
Deployments, ServiceAccounts and RBAC are not served by it and are covered offline
(tests/unit/manifests/test_render.py). Last, the operator runs with the settings of the rendered
Deployment and turns the sample into a Job that uses the install's image, identity and volume.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.unit.manifests.test_render import MANIFESTS, find, render, require_renderer

pytestmark = pytest.mark.apiserver

GROUP, VERSION = "modeltraining.kepler.io", "v1alpha1"
NAMESPACE = "kepler-model"
MANAGER = "gitops-test"
SERVED_CORE_KINDS = ("PersistentVolumeClaim", "Service", "ConfigMap")


@pytest.fixture(scope="module")
def kube() -> Iterator[Any]:
    from tests.support.apiserver import kube_api, skip_reason

    require_renderer()
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with kube_api(namespace=NAMESPACE) as api:
        yield api


def kubectl(kube: Any, *args: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["kubectl", "--request-timeout=30s", *args], env=kube.env(), input=stdin,
                          capture_output=True, text=True, timeout=90)
    if check and proc.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
    return proc


def apply(kube: Any, objects: list[dict[str, Any]], *extra: str, check: bool = True) -> subprocess.CompletedProcess:
    """Server-side apply, as Argo CD (ServerSideApply=true) or Flux do."""
    return kubectl(kube, "apply", "--server-side", f"--field-manager={MANAGER}", "--validate=false", *extra,
                   "-f", "-", stdin=yaml.safe_dump_all(objects), check=check)


def get(kube: Any, kind: str, name: str, namespace: str | None = NAMESPACE) -> dict[str, Any]:
    args = ["get", kind, name, "-o", "json"] + (["-n", namespace] if namespace else [])
    return json.loads(kubectl(kube, *args).stdout)


def wait_served(kube: Any, plurals: list[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    for plural in plurals:
        while kubectl(kube, "get", f"{plural}.{GROUP}", "-n", NAMESPACE, check=False).returncode != 0:
            assert time.monotonic() < deadline, f"{plural} not served after {timeout} s"
            time.sleep(0.2)


def superset(live: Any, wanted: Any) -> bool:
    """Every field Git sets has the same value live (the server may add defaults)."""
    if isinstance(wanted, dict):
        return isinstance(live, dict) and all(k in live and superset(live[k], v) for k, v in wanted.items())
    return live == wanted


def ensure_namespace(kube: Any, name: str) -> None:
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        client.CoreV1Api(kube.client).create_namespace({"apiVersion": "v1", "kind": "Namespace",
                                                        "metadata": {"name": name}}, _preload_content=False)
    except ApiException as exc:
        if exc.status != 409:
            raise


def crds() -> list[dict[str, Any]]:
    return [o for o in render("base") if o["kind"] == "CustomResourceDefinition"]


@pytest.fixture(scope="module")
def installed(kube: Any) -> Any:
    """The rendered CRDs applied and served, then the samples applied once."""
    apply(kube, crds())
    wait_served(kube, ["trainingpipelines", "energyestimations"])
    apply(kube, render("samples"))
    return kube


def test_rendered_crds_are_accepted_established_and_reapply_unchanged(installed: Any) -> None:
    for crd in crds():
        live = get(installed, "customresourcedefinition", crd["metadata"]["name"], namespace=None)
        established = {c["type"]: c["status"] for c in live["status"]["conditions"]}
        assert established.get("Established") == "True" and established.get("NamesAccepted") == "True"
    before = {c["metadata"]["name"]: get(installed, "customresourcedefinition", c["metadata"]["name"], None)
              ["metadata"]["resourceVersion"] for c in crds()}
    apply(installed, crds())
    after = {name: get(installed, "customresourcedefinition", name, None)["metadata"]["resourceVersion"]
             for name in before}
    assert after == before


def test_samples_apply_twice_without_change(installed: Any) -> None:
    samples = render("samples")
    before = {o["kind"]: get(installed, o["kind"].lower(), o["metadata"]["name"]) for o in samples}
    apply(installed, samples)
    for obj in samples:
        live = get(installed, obj["kind"].lower(), obj["metadata"]["name"])
        first = before[obj["kind"]]
        assert live["metadata"]["resourceVersion"] == first["metadata"]["resourceVersion"], obj["kind"]
        assert live["metadata"]["generation"] == first["metadata"]["generation"] == 1
    dry = kubectl(installed, "apply", "--server-side", f"--field-manager={MANAGER}", "--validate=false",
                  "--dry-run=server", "-k", str(MANIFESTS / "samples"))
    assert "serverside-applied" in dry.stdout


def test_schema_defaults_fill_the_spec_without_drift(installed: Any) -> None:
    """Defaults come from the CRD schema (not from the operator), so the live spec is a superset of Git."""
    pipeline = find(render("samples"), "TrainingPipeline", "local-v0-7")
    live = get(installed, "trainingpipeline", "local-v0-7")
    assert superset(live["spec"], pipeline["spec"])
    assert live["spec"] != pipeline["spec"]
    assert live["spec"]["metricPrefix"] == "kepler_"  # a schema default, absent from the sample


def test_operator_status_survives_a_reapply_and_spec_is_untouched(installed: Any) -> None:
    from kepler_operator import status as st

    name = "local-v0-7"
    now = "2026-11-23T12:00:00Z"
    new_status = st.training_status({}, generation=1, job=None, terminated=None, now=now)
    kubectl(installed, "patch", "trainingpipeline", name, "-n", NAMESPACE, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": new_status}))
    with_status = get(installed, "trainingpipeline", name)
    assert with_status["status"]["observedGeneration"] == 1
    assert with_status["status"]["conditions"][0]["type"] == "Ready"
    apply(installed, render("samples"))
    after = get(installed, "trainingpipeline", name)
    assert after["status"] == with_status["status"]
    assert after["metadata"]["resourceVersion"] == with_status["metadata"]["resourceVersion"]
    assert after["metadata"]["generation"] == 1
    # Writing status through the main endpoint is ignored: status is the operator's alone.
    sample = find(render("samples"), "TrainingPipeline", name)
    sample["status"] = {"phase": "Succeeded"}
    apply(installed, [sample])
    assert get(installed, "trainingpipeline", name)["status"] == with_status["status"]


@pytest.mark.parametrize("breakage", ["both-window-kinds", "bad-pipeline-name", "unknown-trainer", "empty-sources"])
def test_broken_samples_are_rejected(installed: Any, breakage: str) -> None:
    sample = copy.deepcopy(find(render("samples"), "TrainingPipeline", "local-v0-7"))
    sample["metadata"]["name"] = f"broken-{breakage}"
    spec = sample["spec"]
    if breakage == "both-window-kinds":
        spec["window"]["start"], spec["window"]["end"] = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z"
    elif breakage == "bad-pipeline-name":
        spec["pipelineName"] = "../escape"
    elif breakage == "unknown-trainer":
        spec["absTrainers"] = ["PickleTrainer"]
    else:
        spec["energySources"] = []
    proc = apply(installed, [sample], check=False)
    assert proc.returncode != 0 and "is invalid" in proc.stderr, proc.stdout + proc.stderr
    assert kubectl(installed, "get", "trainingpipeline", sample["metadata"]["name"], "-n", NAMESPACE,
                   check=False).returncode != 0


@pytest.mark.parametrize("path", ["base", "overlays/kepler-integration"])
def test_served_core_kinds_apply_twice_without_change(kube: Any, path: str) -> None:
    objects = [o for o in render(path) if o["kind"] in SERVED_CORE_KINDS]
    for namespace in {o["metadata"]["namespace"] for o in objects}:
        ensure_namespace(kube, namespace)
    apply(kube, objects)
    first = {(o["kind"], o["metadata"]["name"]): get(kube, o["kind"].lower(), o["metadata"]["name"],
                                                     o["metadata"]["namespace"])["metadata"]["resourceVersion"]
             for o in objects}
    apply(kube, objects)
    second = {(o["kind"], o["metadata"]["name"]): get(kube, o["kind"].lower(), o["metadata"]["name"],
                                                      o["metadata"]["namespace"])["metadata"]["resourceVersion"]
              for o in objects}
    assert second == first


# Last in this module: from here on the operator owns the samples' status.
def test_the_operator_as_installed_turns_the_sample_into_a_job_of_the_install(installed: Any) -> None:
    """The operator, configured with the env of the rendered namespace-scoped Deployment, starts the
    sample's training Job with the install's trainer image, ServiceAccount, PVC and user."""
    from kubernetes import client

    from tests.support.apiserver import OperatorProcess
    from tests.unit.manifests.test_render import env_of

    deployment = find(render("overlays/namespace-scoped"), "Deployment", "kepler-model-operator")
    env = env_of(deployment["spec"]["template"]["spec"]["containers"][0])
    assert env.pop("KEPLER_OPERATOR_NAMESPACES") == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    env.pop("KEPLER_OPERATOR_LIVENESS_ENDPOINT")  # the test process picks a free port instead
    settings = {key.removeprefix("KEPLER_OPERATOR_").lower(): value for key, value in env.items()}
    operator = OperatorProcess(installed, NAMESPACE, **settings).start()
    try:
        batch = client.BatchV1Api(installed.client)
        selector = "modeltraining.kepler.io/kind=TrainingPipeline"
        deadline = time.monotonic() + 60
        jobs: list[Any] = []
        while time.monotonic() < deadline and not jobs:
            try:
                jobs = batch.list_namespaced_job(NAMESPACE, label_selector=selector).items
            except client.ApiException as exc:
                if exc.status != 429:  # "storage is (re)initializing" just after a CRD was (re)applied
                    raise
            time.sleep(0.2)
        assert len(jobs) == 1, operator.output()[-3000:]
        pod = client.ApiClient().sanitize_for_serialization(jobs[0].spec.template.spec)
    finally:
        operator.stop()
    server = find(render("overlays/namespace-scoped"), "Deployment", "kepler-model-server")
    server_image = server["spec"]["template"]["spec"]["containers"][0]["image"]
    assert pod["containers"][0]["image"] == server_image.replace("kepler-model-server:", "kepler-model-trainer:")
    assert pod["serviceAccountName"] == "kepler-model-trainer"
    assert pod["automountServiceAccountToken"] is False
    claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
    assert claims == ["kepler-models"]
    assert pod["securityContext"]["runAsUser"] == 65532
