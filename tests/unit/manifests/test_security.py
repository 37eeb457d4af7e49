"""Security settings of every rendered workload, and least-privilege RBAC: a regression fails CI."""

from __future__ import annotations

from typing import Any

import pytest

from .test_render import INSTALLS, find, render, workloads

GROUP = "modeltraining.kepler.io"

# The operator's whole API surface (issue 6): its two kinds and their status, Jobs, read-only Pods,
# Events (core/v1, as the operator posts them). Anything beyond this set fails
# test_operator_rules_are_exactly_the_needed_ones.
ALLOWED = {
    (GROUP, "trainingpipelines"): {"get", "list", "watch", "patch"},
    (GROUP, "energyestimations"): {"get", "list", "watch", "patch"},
    (GROUP, "trainingpipelines/status"): {"get", "patch"},
    (GROUP, "energyestimations/status"): {"get", "patch"},
    ("batch", "jobs"): {"get", "list", "watch", "create", "delete"},
    ("", "pods"): {"list"},
    ("", "events"): {"create"},
    ("", "secrets"): {"get"},  # issue 12: the opt-in label of a Secret named as Prometheus credentials
    ("", "configmaps"): {"get", "create", "update"},  # issue 15: spec.onnxConfigMap, one named ConfigMap
}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "escalate", "bind", "impersonate"}


def _pods(path: str) -> list[tuple[str, dict[str, Any]]]:
    return [(w["metadata"]["name"], w["spec"]["template"]["spec"]) for w in workloads(render(path))]


def _containers(path: str) -> list[tuple[str, dict[str, Any]]]:
    return [(f"{name}/{c['name']}", c) for name, pod in _pods(path)
            for c in pod.get("initContainers", []) + pod["containers"]]


def _rules(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [rule for o in objects if o["kind"] in ("Role", "ClusterRole") for rule in o.get("rules", [])]


@pytest.mark.parametrize("path", INSTALLS)
def test_every_install_has_the_two_workloads(path: str) -> None:
    assert sorted(n for n, _ in _pods(path)) == ["kepler-model-operator", "kepler-model-server"]


@pytest.mark.parametrize("path", INSTALLS)
def test_pods_run_as_non_root_with_runtime_default_seccomp(path: str) -> None:
    for name, pod in _pods(path):
        ctx = pod["securityContext"]
        assert ctx["runAsNonRoot"] is True, name
        assert ctx.get("runAsUser", 0) > 0 and ctx.get("runAsGroup", 0) > 0, name
        assert ctx["seccompProfile"]["type"] == "RuntimeDefault", name
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), name
        assert all("hostPath" not in v for v in pod.get("volumes", [])), name


@pytest.mark.parametrize("path", INSTALLS)
def test_containers_are_locked_down(path: str) -> None:
    for name, c in _containers(path):
        ctx = c["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False, name
        assert ctx["readOnlyRootFilesystem"] is True, name
        assert ctx["capabilities"]["drop"] == ["ALL"], name
        assert not ctx["capabilities"].get("add"), name
        assert not ctx.get("privileged"), name
        assert ctx.get("runAsNonRoot", True) is True, name


@pytest.mark.parametrize("path", INSTALLS)
def test_containers_have_limits_probes_and_pinned_images(path: str) -> None:
    for name, c in _containers(path):
        assert {"cpu", "memory"} <= set(c["resources"]["limits"]), name
        assert {"cpu", "memory"} <= set(c["resources"]["requests"]), name
        assert "livenessProbe" in c and "readinessProbe" in c, name
        image = c["image"]
        assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{name}: {image}"


def test_operator_runs_one_replica_with_recreate() -> None:
    for path in INSTALLS:
        operator = find(render(path), "Deployment", "kepler-model-operator")
        assert operator["spec"]["replicas"] == 1
        assert operator["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.parametrize("path", INSTALLS)
def test_model_server_mounts_the_models_claim_read_only(path: str) -> None:
    objects = render(path)
    claim = find(objects, "PersistentVolumeClaim", "kepler-models")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    pod = find(objects, "Deployment", "kepler-model-server")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    models = [v for v in volumes.values() if v.get("persistentVolumeClaim", {}).get("claimName") == "kepler-models"]
    assert len(models) == 1 and models[0]["persistentVolumeClaim"]["readOnly"] is True
    mounts = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == models[0]["name"]]
    assert mounts and all(m.get("readOnly") is True for m in mounts)
    service = find(objects, "Service", "kepler-model-server")
    pod_labels = find(objects, "Deployment", "kepler-model-server")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"] and service["spec"]["selector"].items() <= pod_labels.items()


@pytest.mark.parametrize("path", INSTALLS)
def test_no_rule_grants_wildcards_secrets_or_cluster_powers(path: str) -> None:
    for rule in _rules(render(path)):
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule.get(field, []), rule
        assert not rule.get("nonResourceURLs"), rule
        assert not rule.get("resourceNames") or set(rule["verbs"]) <= {"get", "patch", "update"}, rule
        resources = set(rule.get("resources", []))
        if "secrets" in resources:  # one named Secret's labels (asked for as metadata only), nothing more
            assert set(rule["verbs"]) == {"get"} and resources == {"secrets"}, rule
        if "configmaps" in resources:  # read one by name, create or replace it: no list, watch, patch or delete
            assert set(rule["verbs"]) == {"get", "create", "update"} and resources == {"configmaps"}, rule
        assert not resources & {"serviceaccounts", "roles", "rolebindings",
                                "clusterroles", "clusterrolebindings", "customresourcedefinitions", "namespaces",
                                "pods/exec", "pods/attach", "pods/portforward", "nodes"}, rule
        if "pods" in resources:
            assert not set(rule["verbs"]) & WRITE_VERBS, rule


@pytest.mark.parametrize("path", INSTALLS)
def test_operator_rules_are_exactly_the_needed_ones(path: str) -> None:
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in _rules(render(path)):
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    for key, verbs in granted.items():
        assert key in ALLOWED, f"unexpected permission on {key}"
        assert verbs <= ALLOWED[key], f"{key}: {verbs - ALLOWED[key]} not allowed"
    # What kopf and the operator cannot work without.
    for key in [(GROUP, "trainingpipelines"), (GROUP, "trainingpipelines/status"), ("batch", "jobs"),
                ("", "pods"), ("", "events"), ("", "secrets")]:
        assert key in granted, f"missing {key}"
    assert {"list", "watch", "patch"} <= granted[(GROUP, "trainingpipelines")]
    assert {"create", "list", "watch"} <= granted[("batch", "jobs")]


@pytest.mark.parametrize("path", INSTALLS)
def test_only_the_operator_is_bound_and_other_accounts_get_no_token(path: str) -> None:
    objects = render(path)
    subjects = [s for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding") for s in o["subjects"]]
    assert subjects == [{"kind": "ServiceAccount", "name": "kepler-model-operator", "namespace": "kepler-model"}]
    for name in ("kepler-model-trainer", "kepler-model-server"):
        assert find(objects, "ServiceAccount", name)["automountServiceAccountToken"] is False
    server = find(objects, "Deployment", "kepler-model-server")["spec"]["template"]["spec"]
    assert server["serviceAccountName"] == "kepler-model-server"
    assert server["automountServiceAccountToken"] is False


def test_namespace_enforces_the_restricted_pod_security_standard() -> None:
    for path in INSTALLS:
        labels = find(render(path), "Namespace", "kepler-model")["metadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize("path", INSTALLS)
def test_the_sample_job_of_each_install_is_valid_and_locked_down(path: str) -> None:
    """The Job the operator (configured as the install configures it) builds for the sample
    TrainingPipeline: valid batch/v1 in strict mode, and as locked down as the install's workloads
    (it must pass the namespace's `restricted` Pod Security Standard)."""
    import kubernetes_validate

    from kepler_operator import api, jobs

    from .test_render import K8S_VERSIONS, env_of

    objects = render(path)
    env = env_of(find(objects, "Deployment", "kepler-model-operator")["spec"]["template"]["spec"]["containers"][0])
    defaults = jobs.JobDefaults(image=env["KEPLER_OPERATOR_TRAINER_IMAGE"], pvc=env["KEPLER_OPERATOR_DEFAULT_PVC"],
                                service_account=env["KEPLER_OPERATOR_JOB_SERVICE_ACCOUNT"],
                                run_as_user=int(env["KEPLER_OPERATOR_RUN_AS_USER"]))
    sample = find(render("samples"), "TrainingPipeline", "local-v0-7")
    owner = jobs.Owner(sample["kind"], sample["metadata"]["name"], sample["metadata"]["namespace"], "uid-1")
    job = jobs.training_job(owner, api.TrainingPipelineSpec.model_validate(sample["spec"]),
                            jobs.RunRequest(key="g1", trigger="Created", generation=1), defaults)
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(job, version, strict=True)
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    find(objects, "ServiceAccount", pod["serviceAccountName"])
    find(objects, "PersistentVolumeClaim",
         next(v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v))
    for container in pod["containers"]:
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"]["drop"] == ["ALL"] and ctx["runAsNonRoot"] is True
        assert {"cpu", "memory"} <= set(container["resources"]["limits"])  # the sample sets them
