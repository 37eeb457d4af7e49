"""The operator is no confused deputy (issue 12), on a real Kubernetes API server: what the admin's
policy refuses becomes `Ready=False` with the field named and no Job; what it allows still trains; a
policy change is honoured at the next Job; and one pipeline location never has two writers."""

from __future__ import annotations

import json
import time

import pytest
from kubernetes.client.exceptions import ApiException

from tests.support.apiserver import SELECTOR, OperatorProcess, Resources, condition, phase
from tests.support.kubelet import Kubelet

pytestmark = [pytest.mark.apiserver, pytest.mark.slow, pytest.mark.timeout(300)]

TP, EE = "TrainingPipeline", "EnergyEstimation"
PROM = "http://prometheus.monitoring.svc:9090"
POLICY = {"allowed_prometheus_urls": PROM, "resync_seconds": "1"}
"""The admin allows one Prometheus, the default PVC and the operator's own image (the defaults)."""
TP_SPEC = {"prometheus": {"url": PROM}, "window": {"intervalSeconds": 600}, "pipelineName": "std_v1"}
LABEL = "modeltraining.kepler.io/prometheus-credentials"
TRAINED = {"ok": True, "command": "train", "pipeline": "std_v1", "path": "/models/std_v1",
           "archive": "/models/std_v1.zip", "models": 2, "best": []}


def succeed(job: dict) -> tuple[int, str]:
    return 0, json.dumps(TRAINED)


@pytest.fixture
def operator_settings() -> dict[str, str]:
    """The `operator` fixture (tests/support/apiserver.py) runs with this policy."""
    return POLICY


def ready(resource: dict) -> bool:
    return phase(resource) == "Succeeded" and condition(resource, "Ready") == ("True", "Succeeded")


def ready_message(resource: dict) -> str:
    return next(c["message"] for c in resource["status"]["conditions"] if c["type"] == "Ready")


def secret(res: Resources, name: str, labels: dict[str, str] | None = None) -> None:
    res.core.create_namespaced_secret(res.namespace, {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                                      "metadata": {"name": name, "labels": labels or {}},
                                                      "data": {"token": "c2VjcmV0"}})


def refused(res: Resources, kind: str, name: str, reason: str = "PolicyDenied") -> dict:
    """The resource once it shows the refusal; it must never get a Job."""
    resource = res.wait_for(kind, name, lambda r: condition(r, "Ready") == ("False", reason))
    time.sleep(1.5)  # a few resyncs later: still refused, still no Job
    again = res.get(kind, name)
    assert condition(again, "Ready") == ("False", reason) and phase(again) == "Failed"
    assert res.jobs(resource["metadata"]["uid"]) == []
    return again


REFUSALS = [
    ("image", {"job": {"image": "attacker.example/miner:latest"}}, "spec.job.image"),
    ("url", {"prometheus": {"url": "http://attacker.example:9090"}}, "spec.prometheus.url"),
    ("url-lookalike-host", {"prometheus": {"url": "http://prometheus.monitoring.svc:9090.attacker.example"}},
     "spec.prometheus.url"),
    ("url-userinfo", {"prometheus": {"url": "http://prometheus.monitoring.svc:9090@attacker.example"}},
     "spec.prometheus.url"),
    ("url-other-port", {"prometheus": {"url": "http://prometheus.monitoring.svc:9091"}}, "spec.prometheus.url"),
    ("url-https-downgrade", {"prometheus": {"url": "https://prometheus.monitoring.svc:9090"}},
     "spec.prometheus.url"),
    ("pvc", {"storage": {"pvcName": "someone-elses-data"}}, "spec.storage.pvcName"),
]


@pytest.mark.parametrize("what, change, field", REFUSALS, ids=[r[0] for r in REFUSALS])
def test_what_the_policy_refuses_gets_a_condition_naming_the_field_and_no_job(res, operator, what, change, field):
    name = f"deny-{what}"
    res.create(TP, name, {**TP_SPEC, **change})
    assert field in ready_message(refused(res, TP, name))


def test_an_unlabelled_secret_is_refused_until_its_owner_labels_it(res, operator):
    secret(res, "plain")
    spec = {**TP_SPEC, "prometheus": {"url": PROM, "bearerTokenSecret": {"name": "plain"}}}
    res.create(TP, "token", spec)
    message = ready_message(refused(res, TP, "token"))
    assert "spec.prometheus.bearerTokenSecret" in message and LABEL in message
    res.core.patch_namespaced_secret("plain", res.namespace, {"metadata": {"labels": {LABEL: "false"}}})
    time.sleep(1.5)
    assert res.jobs(res.get(TP, "token")["metadata"]["uid"]) == []  # only "true" opts in
    res.core.patch_namespaced_secret("plain", res.namespace, {"metadata": {"labels": {LABEL: "true"}}})
    with Kubelet(res.custom.api_client, res.namespace, SELECTOR, mode=succeed):
        res.wait_for(TP, "token", ready)  # the owner opted in: the next resync runs it


def test_a_missing_secret_and_an_unlabelled_ca_secret_are_refused(res, operator):
    res.create(TP, "nosecret", {**TP_SPEC, "prometheus": {"url": PROM, "bearerTokenSecret": {"name": "absent"}}})
    assert "does not exist" in ready_message(refused(res, TP, "nosecret"))
    secret(res, "ca-plain")
    res.create(TP, "ca", {**TP_SPEC, "prometheus": {"url": PROM, "tls": {"caSecret": {"name": "ca-plain"}}}})
    assert "spec.prometheus.tls.caSecret" in ready_message(refused(res, TP, "ca"))


def test_an_impossible_schedule_is_an_invalid_spec_without_a_retry_loop(res, operator):
    res.create(TP, "feb30", {**TP_SPEC, "schedule": "0 0 30 2 *"})  # passes the CRD: every field is in range
    message = ready_message(refused(res, TP, "feb30", reason="InvalidSpec"))
    assert "spec.schedule" in message and "never fires" in message
    assert "Traceback" not in operator.output()


def test_an_estimation_is_held_to_the_same_policy(res, operator):
    spec = {"model": {"pipelinePath": "std_v1"},
            "input": {"prometheus": {"url": "http://attacker.example:9090"}, "window": {"intervalSeconds": 600}}}
    res.create(EE, "est-url", spec)
    assert "spec.input.prometheus.url" in ready_message(refused(res, EE, "est-url"))
    res.create(EE, "est-image", {"model": {"pipelinePath": "std_v1"}, "input": {"file": "in/q.json"},
                                 "job": {"image": "busybox"}})
    assert "spec.job.image" in ready_message(refused(res, EE, "est-image"))
    res.create(EE, "est-pvc", {"model": {"pipelinePath": "std_v1"}, "input": {"file": "in/q.json"},
                               "storage": {"pvcName": "other"}})
    assert "spec.storage.pvcName" in ready_message(refused(res, EE, "est-pvc"))


def test_the_allowed_path_still_trains_with_a_literal_label_filter(res, operator):
    secret(res, "prom-token", {LABEL: "true"})
    spec = {**TP_SPEC, "labelFilters": {"instance": "~.*"},
            "prometheus": {"url": PROM + "/", "bearerTokenSecret": {"name": "prom-token"}}}
    with Kubelet(res.custom.api_client, res.namespace, SELECTOR, mode=succeed):
        tp = res.create(TP, "allowed", spec)
        res.wait_for(TP, "allowed", ready)
    (job,) = res.jobs(tp["metadata"]["uid"])
    pod = job["spec"]["template"]["spec"]
    command = pod["containers"][0]["command"]
    assert command[command.index("--label-equals") + 1] == "instance=~.*"  # equality with a literal value
    assert "--label-filter" not in command
    assert pod["containers"][0]["image"] == "ghcr.io/kepler-model-operator/trainer:0.1.0"  # the operator's own


def test_a_later_policy_change_is_honoured(kube, ns, res):
    first = OperatorProcess(kube, ns, **POLICY).start()
    try:
        with Kubelet(kube.client, ns, SELECTOR, mode=succeed):
            tp = res.create(TP, "was-allowed", TP_SPEC)
            res.wait_for(TP, "was-allowed", ready)
    finally:
        first.close()
    stricter = OperatorProcess(kube, ns, resync_seconds="1",
                               allowed_prometheus_urls="http://prometheus.monitoring.svc:9090/federate").start()
    try:
        res.patch(TP, "was-allowed", {"metadata": {"annotations": {"modeltraining.kepler.io/rerun": "again"}}})
        denied = res.wait_for(TP, "was-allowed", lambda r: condition(r, "Ready") == ("False", "PolicyDenied"))
        assert "spec.prometheus.url" in ready_message(denied)
        time.sleep(1.5)
        assert [j["metadata"]["name"] for j in res.jobs(tp["metadata"]["uid"])] == ["was-allowed-train-g1"]
    finally:
        stricter.close()


# ---------------------------------------------------------------------------- one writer per pipeline

def test_a_spec_change_waits_for_the_running_job(res, operator):
    with Kubelet(res.custom.api_client, res.namespace, SELECTOR, mode="manual") as kubelet:
        tp = res.create(TP, "busy", TP_SPEC)
        uid = tp["metadata"]["uid"]
        res.wait_for(TP, "busy", lambda r: phase(r) == "Running")
        res.patch(TP, "busy", {"spec": {"historyLimit": 5}})
        time.sleep(2.5)
        assert [j["metadata"]["name"] for j in res.jobs(uid)] == ["busy-train-g1"]  # g2 waits
        kubelet.finish("busy-train-g1", 0, json.dumps(TRAINED))
        deadline = time.monotonic() + 20
        while len(res.jobs(uid)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [j["metadata"]["name"] for j in res.jobs(uid)] == ["busy-train-g1", "busy-train-g2"]
        kubelet.finish("busy-train-g2", 0, json.dumps(TRAINED))
        res.wait_for(TP, "busy", lambda r: ready(r) and r["status"]["lastRun"]["key"] == "g2")


def test_two_resources_publishing_one_location_take_turns(kube, ns, res):
    # the default resync (60 s): the waiting pipeline must be woken by the other Job's end, not by a timer
    proc = OperatorProcess(kube, ns, allowed_prometheus_urls=PROM).start()
    try:
        with Kubelet(res.custom.api_client, res.namespace, SELECTOR, mode="manual") as kubelet:
            first = res.create(TP, "first", TP_SPEC)
            res.wait_for(TP, "first", lambda r: phase(r) == "Running")
            second = res.create(TP, "second", TP_SPEC)  # same PVC, sub-path and pipeline name
            waiting = res.wait_for(TP, "second", lambda r: condition(r, "Ready") == ("False", "PipelineBusy"))
            assert "first-train-g1" in ready_message(waiting) and res.jobs(second["metadata"]["uid"]) == []
            other = res.create(TP, "elsewhere", {**TP_SPEC, "pipelineName": "std_v2"})  # another location: no wait
            res.wait_for(TP, "elsewhere", lambda r: phase(r) == "Running")
            kubelet.finish("first-train-g1", 0, json.dumps(TRAINED))
            res.wait_for(TP, "second", lambda r: phase(r) == "Running")
            assert len(res.jobs(second["metadata"]["uid"])) == 1 and len(res.jobs(first["metadata"]["uid"])) == 1
            assert len(res.jobs(other["metadata"]["uid"])) == 1
    finally:
        proc.close()


def test_admission_refuses_a_zip_name_and_a_regex_filter_before_any_job(res, operator):
    for change in ({"pipelineName": "std_v1.zip"}, {"labelFilters": {"instance=~": ".*"}},
                   {"schedule": "61 * * * *"}):
        with pytest.raises(ApiException) as caught:
            res.create(TP, "sneaky", {**TP_SPEC, **change})
        assert caught.value.status == 422, caught.value.body
    assert res.jobs() == []


def test_the_operator_reads_a_secrets_labels_without_its_data(kube, res, monkeypatch):
    from kepler_operator.kube import Kube

    secret(res, "labelled", {LABEL: "true"})
    monkeypatch.setenv("KUBECONFIG", kube.kubeconfig)
    spy = Kube(1)
    asked = []
    real = spy.core.api_client.rest_client.request

    def recording(method, url, headers=None, *args, **kwargs):
        asked.append((method, url, dict(headers or {})))
        return real(method, url, headers, *args, **kwargs)

    spy.core.api_client.rest_client.request = recording
    assert spy.secret_labels(res.namespace, "labelled") == {LABEL: "true"}
    assert spy.secret_labels(res.namespace, "absent") is None
    method, url, headers = asked[0]
    assert method == "GET" and url.endswith(f"/namespaces/{res.namespace}/secrets/labelled")
    # the server answers this Accept header with metadata only: the Secret's data never reaches the operator
    answer = res.core.read_namespaced_secret("labelled", res.namespace, _headers={"Accept": headers["Accept"]},
                                             _preload_content=False)
    body = json.loads(answer.data)
    assert body["kind"] == "PartialObjectMetadata" and "data" not in body
